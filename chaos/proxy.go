package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// Toxiproxy is an in-process toxiproxy: TCP proxies whose connections can be slowed, stalled or reset, without
// its HTTP API.
type Toxiproxy struct {
	srv *toxiproxy.ApiServer
}

// NewToxiproxy returns an in-process toxiproxy with no proxies. Its log is discarded.
func NewToxiproxy() *Toxiproxy {
	return &Toxiproxy{srv: toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())}
}

// A Proxy forwards a loopback port to an upstream address; toxics act on its connections.
type Proxy struct {
	p *toxiproxy.Proxy
}

// Proxy starts a proxy named name on a free loopback port, forwarding to upstream.
func (x *Toxiproxy) Proxy(name, upstream string) (*Proxy, error) {
	p := toxiproxy.NewProxy(x.srv, name, "127.0.0.1:0", upstream)
	if err := x.srv.Collection.Add(p, true); err != nil {
		return nil, fmt.Errorf("toxiproxy %s: %w", name, err)
	}
	return &Proxy{p: p}, nil
}

// Close stops every proxy and closes their connections.
func (x *Toxiproxy) Close() error { return x.srv.Collection.Clear() }

// Addr returns the address clients dial.
func (p *Proxy) Addr() string { return p.p.Listen }

// A Toxic is a toxiproxy toxic: Type is one of latency, timeout, reset_peer, slicer, bandwidth, limit_data,
// slow_close; Stream "upstream" (client to server) or "downstream" (server to client); Toxicity the share of
// connections it applies to (0 means 1); Attributes the type's settings (e.g. {"latency": 300} in ms).
type Toxic struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Stream     string         `json:"stream"`
	Toxicity   float32        `json:"toxicity"`
	Attributes map[string]any `json:"attributes"`
}

// Add adds the toxic to the proxy's existing and future connections.
func (p *Proxy) Add(t Toxic) error {
	if t.Toxicity == 0 {
		t.Toxicity = 1
	}
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	if _, err := p.p.Toxics.AddToxicJson(strings.NewReader(string(b))); err != nil {
		return fmt.Errorf("toxiproxy %s: adding %s: %w", p.p.Name, t.Name, err)
	}
	return nil
}

// Remove removes the toxic named name.
func (p *Proxy) Remove(name string) error {
	return p.p.Toxics.RemoveToxic(context.Background(), name)
}

// Reset removes every toxic.
func (p *Proxy) Reset() { p.p.Toxics.ResetToxics(context.Background()) }
