package measure

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tetherfleet/tether/e2e/cluster"
)

// tree returns pid and its descendants (the agent and its Helm worker).
func tree(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", out[i]))
		for _, f := range tasks {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			for _, s := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(s); err == nil && !slices.Contains(out, c) {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// treeRSS is the sum of VmRSS over pid and its descendants, and how many
// processes that is. Shared pages (none between the agent and its worker:
// two binaries) would count twice.
func treeRSS(pid int) (int64, int) {
	var sum int64
	procs := tree(pid)
	n := 0
	for _, p := range procs {
		if v, err := cluster.VmRSS(p); err == nil {
			sum += v
			n++
		}
	}
	return sum, n
}

// memCgroup is a memory cgroup made for one process tree, so the memory
// the kernel charges to it (anonymous memory and the page cache it
// faults in, the binaries' pages included) can be read as a container
// runtime would see it.
type memCgroup struct {
	dir string
	v2  bool
}

// newMemCgroup makes a child of this process's memory cgroup (v2, or the
// v1 memory controller). It fails when the hierarchy is not writable.
func newMemCgroup(tb testing.TB, suffix string) (*memCgroup, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	var cg *memCgroup
	for line := range strings.Lines(string(b)) {
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			cg = &memCgroup{dir: filepath.Join("/sys/fs/cgroup/memory", parts[2])}
		case parts[0] == "0" && parts[1] == "" && cg == nil:
			if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
				cg = &memCgroup{dir: filepath.Join("/sys/fs/cgroup", parts[2]), v2: true}
			}
		}
	}
	if cg == nil {
		return nil, fmt.Errorf("no memory cgroup found in /proc/self/cgroup")
	}
	cg.dir = filepath.Join(cg.dir, fmt.Sprintf("tether-measure-%d-%s", os.Getpid(), suffix))
	if err := os.Mkdir(cg.dir, 0o755); err != nil {
		return nil, err
	}
	tb.Cleanup(func() {
		// The processes are gone by then (their cleanups ran first).
		for range 50 {
			if os.Remove(cg.dir) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	return cg, nil
}

func (c *memCgroup) procsFile() string { return filepath.Join(c.dir, "cgroup.procs") }

func (c *memCgroup) read(name string) int64 {
	b, err := os.ReadFile(filepath.Join(c.dir, name))
	if err != nil {
		return -1
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// usage is what the kernel charges the cgroup now.
func (c *memCgroup) usage() int64 {
	if c.v2 {
		return c.read("memory.current")
	}
	return c.read("memory.usage_in_bytes")
}

// peak is the largest charge since the cgroup was made.
func (c *memCgroup) peak() int64 {
	if c.v2 {
		return c.read("memory.peak")
	}
	return c.read("memory.max_usage_in_bytes")
}

// limit sets the cgroup's memory limit in bytes; 0 removes it.
func (c *memCgroup) limit(n int64) error {
	file, val := "memory.limit_in_bytes", strconv.FormatInt(n, 10)
	if c.v2 {
		file = "memory.max"
	}
	if n == 0 {
		val = "-1"
		if c.v2 {
			val = "max"
		}
	}
	return os.WriteFile(filepath.Join(c.dir, file), []byte(val), 0o644)
}

// ooms is how many processes the kernel killed for the cgroup's limit.
func (c *memCgroup) ooms() int64 {
	name := "memory.oom_control"
	if c.v2 {
		name = "memory.events"
	}
	b, err := os.ReadFile(filepath.Join(c.dir, name))
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "oom_kill" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

// stat returns the named counters of memory.stat.
func (c *memCgroup) stat(keys ...string) string {
	b, err := os.ReadFile(filepath.Join(c.dir, "memory.stat"))
	if err != nil {
		return err.Error()
	}
	var parts []string
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 2 && slices.Contains(keys, f[0]) {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			parts = append(parts, fmt.Sprintf("%s %.1f MiB", f[0], mib(n)))
		}
	}
	return strings.Join(parts, ", ")
}

// wrapper writes a script that moves itself into the cgroup and execs
// bin (same pid, so the process keeps its name and finds its worker next
// to itself).
func (c *memCgroup) wrapper(tb testing.TB, dir, bin string) string {
	tb.Helper()
	p := filepath.Join(dir, bin+"-in-cgroup")
	script := fmt.Sprintf("#!/bin/sh\necho $$ > %q || exit 97\nexec %q \"$@\"\n", c.procsFile(), filepath.Join(dir, bin))
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		tb.Fatal(err)
	}
	return filepath.Base(p)
}

// dropPageCache asks the kernel to drop the cached pages of files, so the
// first process to run them faults them in again and is charged for them
// (freshly built binaries sit in the page cache, charged to the build).
func dropPageCache(tb testing.TB, files ...string) {
	tb.Helper()
	for _, f := range files {
		fd, err := unix.Open(f, unix.O_RDONLY, 0)
		if errors.Is(err, unix.ENOENT) {
			continue // a build without that binary (an older tree, measured for comparison)
		}
		if err != nil {
			tb.Fatal(err)
		}
		_ = unix.Fdatasync(fd)
		if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
			tb.Logf("fadvise %s: %v", f, err)
		}
		unix.Close(fd)
	}
}

// sample is one reading of the agent's memory.
type sample struct {
	tree  int64 // sum of VmRSS over the agent and its children
	procs int
	cg    int64 // cgroup charge, -1 without a cgroup
}

func read(pid int, cg *memCgroup) sample {
	s := sample{cg: -1}
	s.tree, s.procs = treeRSS(pid)
	if cg != nil {
		s.cg = cg.usage()
	}
	return s
}

// window is a series of samples taken once a second.
type window []sample

func sampleFor(pid int, cg *memCgroup, d time.Duration) window {
	var w window
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	end := time.After(d)
	for {
		w = append(w, read(pid, cg))
		select {
		case <-end:
			return w
		case <-tick.C:
		}
	}
}

func (w window) stats(f func(sample) int64) (last, median, peak int64) {
	vals := make([]int64, len(w))
	for i, s := range w {
		vals[i] = f(s)
	}
	last = vals[len(vals)-1]
	sorted := slices.Clone(vals)
	slices.Sort(sorted)
	return last, sorted[len(sorted)/2], sorted[len(sorted)-1]
}

// withWorker is the fraction of samples in which a worker ran.
func (w window) withWorker() float64 {
	n := 0
	for _, s := range w {
		if s.procs > 1 {
			n++
		}
	}
	return float64(n) / float64(len(w))
}
