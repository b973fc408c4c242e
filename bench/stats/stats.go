// Package stats summarises a benchmark row: a rate and latency percentiles
// from sorted samples, and ratios against a baseline of the same run.
package stats

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Result is one row's outcome: how many operations completed in how long,
// and each one's latency.
type Result struct {
	Ops     int
	Errors  int
	Elapsed time.Duration
	// CPU is the CPU time the process used over Elapsed, if measured: with
	// the server, the agent and the clients in one process, it is what the
	// row cost the machine, whatever its latencies.
	CPU time.Duration
	// FirstError is the first error an operation returned, if any.
	FirstError error
	// Latencies are the operations' latencies, in no particular order
	// until Summarise sorts them.
	Latencies []time.Duration
}

// Add records one worker's share of a row: its latencies, how many of its
// operations failed and the first error. It is not safe for concurrent
// use: workers serialise their calls.
func (r *Result) Add(latencies []time.Duration, errors int, firstErr error) {
	r.Ops += len(latencies)
	r.Errors += errors
	r.Latencies = append(r.Latencies, latencies...)
	if firstErr != nil && r.FirstError == nil {
		r.FirstError = firstErr
	}
}

// Summary is what a row prints.
type Summary struct {
	Ops        int           `json:"ops"`
	Errors     int           `json:"errors,omitempty"`
	FirstError string        `json:"first_error,omitempty"`
	Rate       float64       `json:"ops_per_s"`
	P50        time.Duration `json:"p50_ns"`
	P99        time.Duration `json:"p99_ns"`
	Max        time.Duration `json:"max_ns"`
	// CPUPerOp is CPU time per successful operation, and Cores the
	// cores kept busy on average; both zero if the CPU was not measured.
	CPUPerOp time.Duration `json:"cpu_per_op_ns,omitempty"`
	Cores    float64       `json:"cpu_cores,omitempty"`
}

// Summarise sorts r's latencies and returns its rate and percentiles.
func (r *Result) Summarise() Summary {
	slices.Sort(r.Latencies)
	s := Summary{Ops: r.Ops, Errors: r.Errors}
	if r.FirstError != nil {
		s.FirstError = r.FirstError.Error()
	}
	if r.Elapsed > 0 {
		s.Rate = float64(r.Ops) / r.Elapsed.Seconds()
	}
	if r.CPU > 0 && r.Ops > 0 && r.Elapsed > 0 {
		s.CPUPerOp = r.CPU / time.Duration(r.Ops)
		s.Cores = r.CPU.Seconds() / r.Elapsed.Seconds()
	}
	s.P50 = Percentile(r.Latencies, 50)
	s.P99 = Percentile(r.Latencies, 99)
	if n := len(r.Latencies); n > 0 {
		s.Max = r.Latencies[n-1]
	}
	return s
}

// Percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest sample that at least p% of the samples
// are less than or equal to. It returns 0 for no samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// Ratio returns ours/base, or NaN if base is not positive: a row whose
// baseline did not run has no ratio.
func Ratio(ours, base float64) float64 {
	if base <= 0 || math.IsNaN(base) || math.IsNaN(ours) {
		return math.NaN()
	}
	return ours / base
}

// FormatRatio prints a ratio with two decimals, or "-" for NaN.
func FormatRatio(r float64) string {
	if math.IsNaN(r) {
		return "-"
	}
	return fmt.Sprintf("%.2f", r)
}

// FormatRate prints an operation rate compactly: 950/s, 12.3k/s, 1.20M/s.
func FormatRate(r float64) string {
	switch {
	case math.IsNaN(r) || r <= 0:
		return "-"
	case r >= 1e6:
		return fmt.Sprintf("%.2fM/s", r/1e6)
	case r >= 1e4:
		return fmt.Sprintf("%.0fk/s", r/1e3)
	case r >= 1e3:
		return fmt.Sprintf("%.1fk/s", r/1e3)
	default:
		return fmt.Sprintf("%.0f/s", r)
	}
}

// FormatLatency prints a latency with three significant figures in us or
// ms, or "-" for none (zero). A negative one (an event before its due
// time) gets a minus sign.
func FormatLatency(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < 0:
		return "-" + FormatLatency(-d)
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fus", float64(d)/float64(time.Microsecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}
