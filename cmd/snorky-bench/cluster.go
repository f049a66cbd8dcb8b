package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/snorkyhq/snorky/cmd/snorky/natslocal"
)

// natsScenario is the hidden scenario that runs a NATS server with
// JetStream in a process of its own (a child of the runner), so that its
// CPU is measured apart from the runner's and the nodes'.
const natsScenario = "nats-server"

// runNATSChild runs the NATS server until ctx is done; its first line on
// stdout is "NATS <url>".
func runNATSChild(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return errors.New("usage: snorky-bench nats-server DIR")
	}
	c, err := natslocal.Start(args[0], 1)
	if err != nil {
		return err
	}
	defer c.Shutdown()
	fmt.Fprintf(stdout, "NATS %s\n", c.URL(0))
	<-ctx.Done()
	return nil
}

// natsProc is the NATS server child.
type natsProc struct {
	PID int
	URL string
	cmd *exec.Cmd
	dir string
}

// startNATS starts the runner itself as a NATS server child.
func startNATS(ctx context.Context, logf func(string, ...any)) (*natsProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "snorky-bench-nats-")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, natsScenario, dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	n := &natsProc{PID: cmd.Process.Pid, cmd: cmd, dir: dir}
	lines := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		if s.Scan() {
			lines <- s.Text()
		}
		close(lines)
		io.Copy(io.Discard, out)
	}()
	select {
	case line, ok := <-lines:
		if !ok || !strings.HasPrefix(line, "NATS ") {
			n.Stop()
			return nil, fmt.Errorf("the NATS server child did not start (%q)", line)
		}
		n.URL = strings.TrimPrefix(line, "NATS ")
	case <-time.After(30 * time.Second):
		n.Stop()
		return nil, errors.New("the NATS server child did not start within 30 s")
	case <-ctx.Done():
		n.Stop()
		return nil, ctx.Err()
	}
	logf("nats: pid %d, %s", n.PID, n.URL)
	return n, nil
}

// Stop ends the NATS server child and removes its storage.
func (n *natsProc) Stop() {
	n.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { n.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		n.cmd.Process.Kill()
		<-done
	}
	os.RemoveAll(n.dir)
}

// clusterServerConfig is the cluster section of each node.
func clusterServerConfig(natsURL string) string {
	return fmt.Sprintf(`cluster:
  name: bench
  nats: {url: %q}
`, natsURL)
}

// cpuOf sums the CPU time of the processes pids.
func cpuOf(pids []int) (time.Duration, error) {
	var total time.Duration
	for _, pid := range pids {
		s, err := readProc(pid)
		if err != nil {
			return 0, err
		}
		total += s.CPU
	}
	return total, nil
}
