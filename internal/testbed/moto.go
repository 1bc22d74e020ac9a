package testbed

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// What moto 5.2.5 answers, verified with boto3 and aws-sdk-go-v2 against
// moto_server (see also watcher.go, leaks.go and moto_launcher.py):
//   - MOTO_AMIS_PATH: plain moto loads every image into every region with the
//     same id, forces owner alias "amazon", and has no deprecation field
//     (Ami() rejects unknown keys; there is no EnableImageDeprecation). Hence
//     moto_launcher.py. The "name" filter takes * wildcards; Owners matches
//     owner id or alias.
//   - RunInstances/CreateFleet do not check that the AMI exists in the region:
//     another region's id is accepted (AWS: InvalidAMIID.NotFound). The
//     instance's Architecture is the AMI's.
//   - RunInstances answers "pending"; plain moto's DescribeInstances says
//     "running" at once (moto_launcher.py keeps it pending until the host is up).
//   - DescribeRegions lists 38 regions (also cn-*, us-gov-*, and opt-in ones as
//     "not-opted-in") with or without AllRegions.
//   - DescribeAvailabilityZones: us-east-2a/b/c (use2-az1..3), eu-west-1a/b/c
//     (euw1-az3, az1, az2), us-east-1a..f; all "available".
//   - DescribeInstanceTypes knows the Graviton types (c7g.2xlarge: arm64, 8
//     vCPU, 16384 MiB, spot and on-demand); an unknown type is an
//     InvalidInstanceType error. 418 arm64 types without paging.
//   - DescribeInstanceTypeOfferings: c6g/c7g/c8g/m6g/m7g/m8g .2xlarge offered
//     in every zone of us-east-2 and eu-west-1, and of us-east-1 except
//     us-east-1e (location types region and availability-zone); nothing in
//     regions moto has no data for (e.g. ap-southeast-7).
//   - DescribeSpotPriceHistory: one price per zone and type, always 0.00001,
//     timestamp 2006-01-02T15:04:05Z, ProductDescription
//     "Linux/UNIX (Amazon VPC)"; the ProductDescriptions and AvailabilityZone
//     filters are ignored (all zones come back).
//   - Each region has a default VPC with one default subnet per zone
//     (MapPublicIpOnLaunch true) and a "default" security group.
//
//go:embed moto_launcher.py
var motoLauncher []byte

// MotoVersion is the moto release scripts/testbed-deps.sh installs and
// moto_launcher.py's patches are written against.
const MotoVersion = "5.2.5"

// motoServer is moto's EC2 server as a child process on 127.0.0.1.
type motoServer struct {
	url     string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	logFile *os.File
	once    sync.Once
}

// RepoRoot finds the repository root by walking up from the working directory
// to the folder holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s; run from inside the repository", dir)
		}
	}
}

// venvPython is the Python of the venv scripts/testbed-deps.sh makes.
func venvPython(root string) (string, error) {
	py := filepath.Join(root, ".cache", "venv", "bin", "python")
	if _, err := os.Stat(filepath.Join(root, ".cache", "venv", "bin", "moto_server")); err != nil {
		return "", fmt.Errorf("moto is not installed in %s/.cache/venv; run `make testbed-deps` (installs moto[server]==%s)", root, MotoVersion)
	}
	return py, nil
}

// freePort asks the kernel for a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startMoto starts moto (through moto_launcher.py) with the catalogue, and
// waits until it answers.
func startMoto(ctx context.Context, workDir string) (*motoServer, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	py, err := venvPython(root)
	if err != nil {
		return nil, err
	}
	amisPath := filepath.Join(workDir, "amis.json")
	if err := writeCatalogue(amisPath); err != nil {
		return nil, fmt.Errorf("writing the AMI catalogue: %w", err)
	}
	launcher := filepath.Join(workDir, "moto_launcher.py")
	if err := os.WriteFile(launcher, motoLauncher, 0o644); err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		m, err := startMotoOnce(ctx, py, launcher, amisPath, workDir)
		if err == nil {
			return m, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func startMotoOnce(ctx context.Context, py, launcher, amisPath, workDir string) (*motoServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(workDir, "moto.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(py, launcher, "-H", "127.0.0.1", "-p", strconv.Itoa(port))
	cmd.Dir = workDir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = motoEnv(amisPath)
	// Pdeathsig kills moto if this process dies. It fires when the thread that
	// started moto ends, so that thread stays locked to the goroutine waiting
	// for moto, for moto's whole life.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	m := &motoServer{url: fmt.Sprintf("http://127.0.0.1:%d", port), logPath: logPath, cmd: cmd, done: make(chan struct{}), logFile: logFile}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		m.waitErr = cmd.Wait()
		close(m.done)
	}()
	if err := <-started; err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting moto (%s): %w", py, err)
	}
	if err := m.waitReady(ctx, 60*time.Second); err != nil {
		m.Close()
		return nil, fmt.Errorf("%w\nmoto log (%s):\n%s", err, logPath, tailFile(logPath, 30))
	}
	return m, nil
}

// motoEnv is the environment for moto: the catalogue, no default AMIs, and no
// AWS settings of the caller's.
func motoEnv(amisPath string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "MOTO_") || k == "TEST_SERVER_MODE" {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"MOTO_AMIS_PATH="+amisPath,
		"MOTO_EC2_LOAD_DEFAULT_AMIS=false",
		"AWS_ACCESS_KEY_ID=testing",
		"AWS_SECRET_ACCESS_KEY=testing",
		"PYTHONUNBUFFERED=1",
	)
}

func (m *motoServer) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	client := &http.Client{Timeout: 2 * time.Second}
	// The port was free when freePort looked; another process (another test
	// bed's fault proxy or moto) may have taken it since. Only an answer
	// naming our child's pid counts (TestbedPing, moto_launcher.py).
	want := fmt.Sprintf("<pid>%d</pid>", m.cmd.Process.Pid)
	form := "Action=TestbedPing&Version=2016-11-15"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, m.url+"/", strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0")
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(body), want) {
				return nil
			}
		}
		select {
		case <-m.done:
			return fmt.Errorf("moto exited before answering: %v", m.waitErr)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("moto did not answer on %s within %s", m.url, limit)
		}
	}
}

// Close stops moto: SIGTERM to its process group, SIGKILL after 5 s.
func (m *motoServer) Close() error {
	m.once.Do(func() {
		if m.cmd.Process != nil {
			_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-m.done:
			case <-time.After(5 * time.Second):
				_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
				<-m.done
			}
		}
		m.logFile.Close()
	})
	return nil
}

var successLine = regexp.MustCompile(`HTTP/1\.[01]"? (200|204) -$`)

// tailFile returns the last n lines of a file, or a note why it cannot.
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	var lines [][]byte
	for _, l := range bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n")) {
		// werkzeug's access lines of answered requests are noise (the
		// watcher polls); errors show as 4xx/5xx lines and tracebacks.
		if successLine.Match(l) {
			continue
		}
		lines = append(lines, l)
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
