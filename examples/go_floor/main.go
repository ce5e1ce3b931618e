// The Go floor for idle memory (ci/bench-foundation): the smallest stdlib-only Go daemon
// of the same shape as `test_machine_monitor --no-bot --devices none`, that is /healthz and
// a small /metrics on one port, and the bot's hook calls (POST, a JSON body in, a JSON
// answer out) on another. It does nothing else, so its idle RSS is what the Go runtime
// and net/http cost before any work.
//
// Usage: go_floor --metrics-addr 127.0.0.1:PORT --hook-addr 127.0.0.1:PORT
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"sync/atomic"
	"time"
)

func main() {
	metricsAddr := flag.String("metrics-addr", "127.0.0.1:9100", "address of /healthz and /metrics")
	hookAddr := flag.String("hook-addr", "127.0.0.1:9101", "address of the hook endpoints")
	flag.Parse()
	start := time.Now()
	var hookCalls atomic.Int64

	status := http.NewServeMux()
	status.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	status.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, "# TYPE floor_uptime_seconds gauge\nfloor_uptime_seconds %.3f\n", time.Since(start).Seconds())
		fmt.Fprintf(w, "# TYPE floor_hook_calls_total counter\nfloor_hook_calls_total %d\n", hookCalls.Load())
	})

	hooks := http.NewServeMux()
	hooks.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST expected", http.StatusMethodNotAllowed)
			return
		}
		var in map[string]any
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, "a JSON body expected: "+err.Error(), http.StatusBadRequest)
			return
		}
		hookCalls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"dimensions": map[string][]string{"os": {"Android"}}})
	})

	go func() { log.Fatal(http.ListenAndServe(*hookAddr, hooks)) }()
	log.Fatal(http.ListenAndServe(*metricsAddr, status))
}
