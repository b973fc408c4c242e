package stats

import (
	"math"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i))
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {99, 99}, {100, 100}, {0.1, 1}, {1, 1}} {
		if got := Percentile(s, tc.p); got != tc.want {
			t.Errorf("Percentile(1..100, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("Percentile(nil) = %v, want 0", got)
	}
	if got := Percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("Percentile([7], 99) = %v, want 7", got)
	}
}

func TestSummarise(t *testing.T) {
	r := Result{Ops: 4, Elapsed: 2 * time.Second, Latencies: []time.Duration{4, 1, 3, 2}}
	s := r.Summarise()
	if s.Rate != 2 || s.P50 != 2 || s.P99 != 4 || s.Max != 4 {
		t.Errorf("Summarise = %+v, want rate 2, p50 2, p99 4, max 4", s)
	}
	if (&Result{}).Summarise().Rate != 0 {
		t.Error("an empty result has a rate")
	}
}

func TestSummariseCPU(t *testing.T) {
	r := Result{Ops: 4, Elapsed: 2 * time.Second, CPU: 3 * time.Second}
	if s := r.Summarise(); s.CPUPerOp != 750*time.Millisecond || s.Cores != 1.5 {
		t.Errorf("Summarise = %v per op on %v cores, want 750ms on 1.5", s.CPUPerOp, s.Cores)
	}
	if s := (&Result{Ops: 4, Elapsed: time.Second}).Summarise(); s.CPUPerOp != 0 || s.Cores != 0 {
		t.Errorf("a row without CPU measured has %v per op on %v cores", s.CPUPerOp, s.Cores)
	}
}

func TestRatio(t *testing.T) {
	if got := Ratio(3, 4); got != 0.75 {
		t.Errorf("Ratio(3, 4) = %v", got)
	}
	for _, base := range []float64{0, -1, math.NaN()} {
		if got := Ratio(1, base); !math.IsNaN(got) {
			t.Errorf("Ratio(1, %v) = %v, want NaN", base, got)
		}
	}
	if FormatRatio(math.NaN()) != "-" || FormatRatio(0.456) != "0.46" {
		t.Error("FormatRatio")
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		r    float64
		want string
	}{{950, "950/s"}, {1234, "1.2k/s"}, {12345, "12k/s"}, {1.2e6, "1.20M/s"}, {0, "-"}} {
		if got := FormatRate(tc.r); got != tc.want {
			t.Errorf("FormatRate(%v) = %q, want %q", tc.r, got, tc.want)
		}
	}
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{{1500 * time.Nanosecond, "2us"}, {2500 * time.Microsecond, "2.50ms"}, {25 * time.Millisecond, "25.0ms"}, {0, "-"}, {-3 * time.Millisecond, "-3.00ms"}} {
		if got := FormatLatency(tc.d); got != tc.want {
			t.Errorf("FormatLatency(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}
