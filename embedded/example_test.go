package embedded_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/leaseagent/lease/embedded"
	"github.com/nats-io/nats.go/jetstream"
)

// Start a server on a random port, store a value in a JetStream key-value
// bucket through an in-process connection and shut the server down.
func ExampleStart() {
	dir, err := os.MkdirTemp("", "embedded-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	s, err := embedded.Start(embedded.Config{Port: embedded.RandomPort, DataDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Shutdown()

	nc, err := s.Connect()
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	ctx := context.Background()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "example"})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := kv.Put(ctx, "greeting", []byte("hello")); err != nil {
		log.Fatal(err)
	}
	e, err := kv.Get(ctx, "greeting")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(e.Value()))
	// Output: hello
}
