package keywardgocron_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/go-co-op/gocron/v2"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/contrib/keywardgocron"
	"github.com/keyward/keyward/election"
	"github.com/keyward/keyward/lock"
)

// Two instances of a service schedule the same job; when it is due, one runs it and the other skips it.
func ExampleNewLocker() {
	srv, _ := miniredis.Run() // an embedded Redis for the example; use your own client in production
	defer srv.Close()

	ran := make(chan int64, 2)
	skipped := make(chan error, 2)
	for range 2 { // each instance, in its own process, has its own client, lock client, Locker and scheduler
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		defer rdb.Close()
		locks, _ := lock.New(rdb)
		defer locks.Close()
		// The Locker must auto-refresh, so that a run keeps its lock however long it lasts.
		locker, err := keywardgocron.NewLocker(locks.Locker(lock.WithAutoRefresh()))
		if err != nil {
			fmt.Println(err)
			return
		}
		defer locker.Close(context.Background()) // after the scheduler's Shutdown: defers run last first

		s, _ := gocron.NewScheduler(gocron.WithDistributedLocker(locker))
		defer s.Shutdown()
		report := func(ctx context.Context) error {
			fence, _ := keywardgocron.FenceFrom(ctx) // for storage that refuses a late run's writes
			ran <- fence
			return nil
		}
		_, err = s.NewJob(
			gocron.OneTimeJob(gocron.OneTimeJobStartImmediately()), // a DurationJob or CronJob in a service
			gocron.NewTask(locker.Job(report)),                     // Job: the fence, and a ctx that ends with the lock
			gocron.WithName("report"),                              // the lock key
			gocron.WithEventListeners(gocron.AfterLockError(func(_ uuid.UUID, _ string, err error) {
				skipped <- err
			})),
		)
		if err != nil {
			fmt.Println(err)
			return
		}
		s.Start()
	}

	fence := <-ran
	err := <-skipped
	fmt.Println("ran once, fenced:", fence > 0)
	fmt.Println("the other skipped:", errors.Is(err, keyward.ErrNotObtained))
	// Output:
	// ran once, fenced: true
	// the other skipped: true
}

// An instance leads an election; only the leader's scheduler runs jobs.
func ExampleNewElector() {
	srv, _ := miniredis.Run()
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	locks, _ := lock.New(rdb)
	defer locks.Close()

	e, _ := election.New(locks.Locker(), "scheduler")
	elector, err := keywardgocron.NewElector(e) // campaigns in the background until Close
	if err != nil {
		fmt.Println(err)
		return
	}
	defer elector.Close() // resigns, so that another instance leads at once

	s, _ := gocron.NewScheduler(gocron.WithDistributedElector(elector))
	defer s.Shutdown()
	ran := make(chan int64, 1)
	_, _ = s.NewJob(
		gocron.DurationJob(10*time.Millisecond), // skipped until this instance leads
		gocron.NewTask(elector.Job(func(ctx context.Context) error {
			term, _ := keywardgocron.FenceFrom(ctx) // the term number
			select {
			case ran <- term:
			default:
			}
			return nil
		})))
	s.Start()
	fmt.Println("ran in a term:", <-ran > 0)
	fmt.Println("leading:", elector.IsLeader(context.Background()) == nil)
	// Output:
	// ran in a term: true
	// leading: true
}
