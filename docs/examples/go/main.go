// A webhook receiver that accepts only requests signed by hookstream.
//
//	WEBHOOK_SECRET='whsec_…' PORT=9000 go run .
//
// It answers 204 to a request whose signature verifies and 400 to anything else.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

type event struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	OccurredAt string          `json:"occurred_at"`
	Data       json.RawMessage `json:"data"`
}

func main() {
	// Build the verifier once: it decodes the secret, and the same one serves every request.
	verifier, err := standardwebhooks.NewWebhook(os.Getenv("WEBHOOK_SECRET"))
	if err != nil {
		log.Fatalf("WEBHOOK_SECRET: %v", err)
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "9000"
	}

	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// Verify the raw body exactly as it arrived, before any JSON decoding.
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if err := verifier.Verify(body, r.Header); err != nil {
			fmt.Printf("rejected: %v\n", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var received event
		if err := json.Unmarshal(body, &received); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		// webhook-id is identical on every retry of a delivery: use it to ignore duplicates.
		fmt.Printf("verified %s %s\n", r.Header.Get("webhook-id"), received.Type)
		handle(received)
		w.WriteHeader(http.StatusNoContent)
	})

	listener := "127.0.0.1:" + port
	fmt.Printf("listening on http://%s/\n", listener)
	log.Fatal(http.ListenAndServe(listener, nil))
}

// handle is your business logic; answer quickly and queue slow work (the sender waits for you).
func handle(received event) {
	fmt.Println(string(received.Data))
}
