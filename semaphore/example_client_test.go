package semaphore_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/semaphore"
)

// partnerClient calls a partner's API, which allows 8 requests in flight per account, from every replica of a
// service: the replicas share one semaphore on their Redis.
type partnerClient struct {
	http  *http.Client
	base  string
	slots *semaphore.Semaphore
}

func newPartnerClient(rdb redis.UniversalClient, httpClient *http.Client, base string) (*partnerClient, error) {
	slots, err := semaphore.New(rdb, "partner-api", 8)
	if err != nil {
		return nil, err
	}
	return &partnerClient{http: httpClient, base: base, slots: slots}, nil
}

// Get waits for one of the 8 places, calls the partner and gives the place back. The ttl bounds how long a
// replica that crashed mid-call keeps its place; Do refreshes the permit while the call lasts longer.
func (c *partnerClient) Get(ctx context.Context, path string) ([]byte, error) {
	var body []byte
	err := c.slots.Do(ctx, 30*time.Second, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
		if err != nil {
			return err
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err = io.ReadAll(resp.Body)
		return err
	})
	return body, err
}

func (c *partnerClient) Close() error { return c.slots.Close() }

// Three replicas send 30 requests at once; the partner never sees more than 8 in flight.
func Example_partnerClient() {
	var inFlight, most atomic.Int32
	partner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(5 * time.Millisecond)
		fmt.Fprint(w, "ok")
	}))
	defer partner.Close()
	defer partner.Client().CloseIdleConnections()
	srv, _ := miniredis.Run()
	defer srv.Close()

	var ok atomic.Int32
	var wg sync.WaitGroup
	for range 3 { // each replica has its own Redis client and its own partnerClient
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		defer rdb.Close()
		client, err := newPartnerClient(rdb, partner.Client(), partner.URL)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer client.Close()
		for range 10 {
			wg.Go(func() {
				if body, err := client.Get(context.Background(), "/quote"); err == nil && string(body) == "ok" {
					ok.Add(1)
				}
			})
		}
	}
	wg.Wait()
	fmt.Println("answered:", ok.Load())
	fmt.Println("at most 8 in flight:", most.Load() <= 8)
	// Output:
	// answered: 30
	// at most 8 in flight: true
}
