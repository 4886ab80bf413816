package cluster

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// RSS returns the resident set size in bytes of each component, read from
// /proc/PID/status (VmRSS), keyed by component name.
func (c *Cluster) RSS() (map[string]int64, error) {
	out := map[string]int64{}
	for _, comp := range c.Components() {
		n, err := VmRSS(comp.PID)
		if err != nil {
			return nil, fmt.Errorf("rss of %s (pid %d): %w", comp.Name, comp.PID, err)
		}
		out[comp.Name] = n
	}
	return out, nil
}

// VmRSS reads a process's resident set size, in bytes, from
// /proc/PID/status.
func VmRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		rest, ok := strings.CutPrefix(s.Text(), "VmRSS:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest) // "123456 kB"
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", s.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse VmRSS line %q: %w", s.Text(), err)
		}
		return kb * 1024, nil
	}
	if err := s.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
