// Package loopback has the steps every bench tool takes before it measures
// a process on 127.0.0.1: pick a free port for it, start it, and wait until
// it listens there.
package loopback

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// FreeAddr returns a 127.0.0.1 address with a port free right now (the
// listener that found it is closed again before it returns).
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// WaitUp waits until something accepts connections on addr, trying every
// 50 ms for at most within.
func WaitUp(addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s after %v: %w", addr, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartSluice writes config to dir/sluice.yaml, starts the sluice binary bin
// with it (its stderr goes to this process's) and waits until it listens on
// listen. The caller stops it (Process.Kill, then Wait).
func StartSluice(bin, dir, config, listen string) (*exec.Cmd, error) {
	file := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-config", file)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if err := WaitUp(listen, 5*time.Second); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("sluice did not start: %w", err)
	}
	return cmd, nil
}
