//go:build e2e

package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	sdkssh "github.com/hashicorp/packer-plugin-sdk/sdk-internals/communicator/ssh"
	gossh "golang.org/x/crypto/ssh"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/payload"
	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// BenchmarkDownloadLongLink times how long the user waits for a verified
// .img on disk, on emulated links to a test bed host (a network namespace
// with OpenSSH's sshd and the stand-in nix, which makes an SD image that
// compresses about 3:1 like a real one), for:
//
//	(a) sdk-download  the Packer SDK SSH communicator's Download of the
//	                  .img.zst (what a `file` provisioner with direction =
//	                  "download" does), then `zstd -d` (which checks the
//	                  frame's checksum)
//	(b) scp           OpenSSH's scp command, then `zstd -d`
//	(c) engine        payload.Run with the build's SSH credentials (the
//	                  connections and channels it chooses itself), in a
//	                  process of its own whose peak RSS (VmHWM) is read
//	(c1) engine-1conn the same on the communicator's connection only
//	(d) link limit    the compressed bytes over the link rate
//	(e) decode limit  payload.DecodeLocal of the host's compressed file from
//	                  local disk: the engine's local work (SHA-256 of the
//	                  compressed bytes, zstd with its frame checksum, sparse
//	                  writes) with nothing to wait for
//
// Each engine row's target is max((d), (e)): the engine overlaps the fetch
// and the decoding, so neither the link nor this machine's CPU allows less.
//
// Every figure is measured in the same run, against the same host and link,
// and printed as a ratio against (a). Nothing is asserted about times. The
// links (NIXOS_SD_BENCH_LINKS, default "0/0,1000/80ms,200/40ms": Mbit/s and
// RTT, 0 = none) are shaped with tc tbf and the test bed's delay proxy, which
// also caps each TCP connection's bytes in flight at 4 MiB (Linux's default
// tcp_wmem maximum on the sending instance). NIXOS_SD_BENCH_IMAGE_MIB sets
// the image (1024), NIXOS_SD_BENCH_METHODS the methods (a,b,c,c1,e). Run it
// with `make bench-e2e` (root).
func BenchmarkDownloadLongLink(b *testing.B) {
	links := benchLinks(b)
	imageMiB := benchImageMiB(b)
	var rows []benchRow
	load0 := loadAvg()
	for _, link := range links {
		rows = append(rows, benchOneLink(b, link, imageMiB)...)
	}
	printBenchTable(imageMiB, rows, load0, loadAvg())
}

const (
	benchDefaultLinks    = "0/0,1000/80ms,200/40ms"
	benchDefaultImageMiB = 1024
	// benchTCPWindow is what one TCP connection may have in flight on the
	// emulated links (see testbed.LinkProfile.TCPWindow).
	benchTCPWindow = 4 << 20
	// benchFlake is a flake reference that is not uploaded: the stand-in
	// nix's store path then depends on nothing that changes between runs,
	// so every run after the first downloads the same build result.
	benchFlake = "github:nixos-sd/bench-standin#rpi"
	// benchChildEnv makes the test binary run one engine download and exit
	// (see TestMain): the engine's own process, whose peak RSS is its own.
	benchChildEnv = "NIXOS_SD_BENCH_CHILD"
)

func benchLinks(b *testing.B) []testbed.LinkProfile {
	spec := orDefault(os.Getenv("NIXOS_SD_BENCH_LINKS"), benchDefaultLinks)
	var links []testbed.LinkProfile
	for _, l := range strings.Split(spec, ",") {
		rate, rtt, ok := strings.Cut(strings.TrimSpace(l), "/")
		r, err1 := strconv.ParseFloat(rate, 64)
		d, err2 := time.ParseDuration(rtt)
		if rtt == "0" {
			d, err2 = 0, nil
		}
		if !ok || err1 != nil || err2 != nil || r < 0 || d < 0 {
			b.Fatalf("NIXOS_SD_BENCH_LINKS=%q: want comma-separated MBIT/RTT pairs such as %q (0 = none)", spec, benchDefaultLinks)
		}
		link := testbed.LinkProfile{RateMbit: r, RTT: d}
		if d > 0 {
			link.TCPWindow = benchTCPWindow
		}
		links = append(links, link)
	}
	return links
}

// benchMethods are the methods NIXOS_SD_BENCH_METHODS names (a, b, c,
// c1, e; all by default).
func benchMethods(b *testing.B) map[string]bool {
	spec := orDefault(os.Getenv("NIXOS_SD_BENCH_METHODS"), "a,b,c,c1,e")
	m := map[string]bool{}
	for _, k := range strings.Split(spec, ",") {
		k = strings.TrimSpace(k)
		if k != "a" && k != "b" && k != "c" && k != "c1" && k != "e" {
			b.Fatalf("NIXOS_SD_BENCH_METHODS=%q: want a comma-separated list of a, b, c, c1 and e", spec)
		}
		m[k] = true
	}
	return m
}

func benchImageMiB(b *testing.B) int {
	v := os.Getenv("NIXOS_SD_BENCH_IMAGE_MIB")
	if v == "" {
		return benchDefaultImageMiB
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 56 {
		b.Fatalf("NIXOS_SD_BENCH_IMAGE_MIB=%q: want a whole number of MiB, at least 56", v)
	}
	return n
}

func linkName(l testbed.LinkProfile) string {
	if l.RateMbit == 0 && l.RTT == 0 {
		return "unshaped"
	}
	rate := "unlimited"
	if l.RateMbit > 0 {
		rate = fmt.Sprintf("%g Mbit/s", l.RateMbit)
	}
	return fmt.Sprintf("%s, %v", rate, l.RTT)
}

// benchRow is one method's figures on one link.
type benchRow struct {
	link     testbed.LinkProfile
	method   string
	fileMB   float64       // compressed bytes fetched, 10^6
	fetch    time.Duration // until the .img.zst is on disk (and, for the engine, verified)
	total    time.Duration // until the verified .img is on disk
	rssMiB   float64       // the engine's peak RSS
	cpuBusy  float64       // the machine's CPU use during the run, 0-1
	procCPU  time.Duration // the engine process's CPU time (user+sys)
	comment  string
	baseline bool
}

// benchOneLink starts a host behind link, builds the image once, and times
// each method.
func benchOneLink(b *testing.B, link testbed.LinkProfile, imageMiB int) []benchRow {
	bench := startBenchHost(b, link, imageMiB)
	defer bench.close()

	// The one real build; the engine runs after it reuse its result.
	warm := bench.engine(b, 0)
	remote := warm.remote
	size := bench.remoteSize(b, remote)
	b.Logf("%s: built %s (%.1f MB compressed)", linkName(link), remote, float64(size)/1e6)

	var rows []benchRow
	add := func(r benchRow) {
		r.link = link
		r.fileMB = float64(size) / 1e6
		rows = append(rows, r)
		b.Logf("%s %s: fetch %v, verified .img %v", linkName(link), r.method, r.fetch.Round(time.Millisecond), r.total.Round(time.Millisecond))
	}
	want := benchMethods(b)
	if want["a"] {
		add(bench.baseline(b, "(a) sdk-download", remote, bench.sdkDownload))
	}
	if want["b"] {
		add(bench.baseline(b, "(b) scp", remote, bench.scp))
	}
	if want["c"] {
		add(bench.engineRow(b, "(c) engine", 0))
	}
	if want["c1"] {
		add(bench.engineRow(b, "(c1) engine-1conn", 1))
	}
	if link.RateMbit > 0 {
		d := time.Duration(float64(size) / (link.RateMbit * 1e6 / 8) * float64(time.Second))
		add(benchRow{method: "(d) link limit", fetch: d, total: d, comment: "compressed bytes / link rate"})
	}
	if want["e"] {
		add(bench.decodeLimit(b, remote))
	}
	return rows
}

// decodeLimit times payload.DecodeLocal of the host's compressed file, read
// from the host's folder on this machine's disk.
func (h *benchHost) decodeLimit(b *testing.B, remote string) benchRow {
	b.Helper()
	rel, _ := strings.CutPrefix(remote, standinState)
	src := filepath.Join(h.host.Dir, "state", filepath.FromSlash(rel))
	dst := filepath.Join(h.dir, "decode-limit.img")
	defer os.Remove(dst)
	cpu0 := machineCPU()
	start := time.Now()
	if _, _, err := payload.DecodeLocal(src, dst, false); err != nil {
		b.Fatalf("(e) decode limit: %v", err)
	}
	el := time.Since(start)
	return benchRow{method: "(e) decode limit", fetch: 0, total: el, cpuBusy: machineCPU().busySince(cpu0), comment: "payload.DecodeLocal of the file on local disk"}
}

// benchBuildSeconds is how long the engine's measured runs, which reuse the
// image the first run built, spend in the build: a real build takes minutes,
// during which the engine opens its connections, so the download starts with
// them ready.
const benchBuildSeconds = 5

// benchHost is one host every method downloads from.
type benchHost struct {
	pool     *testbed.HostPool
	host     *testbed.Host
	comm     packersdk.Communicator
	conns    []net.Conn
	connMu   sync.Mutex
	keyFile  string
	addr     string
	imageMiB int
	dir      string
	runs     int
	uiLog    *syncLog
	restore  func()
}

func startBenchHost(b *testing.B, link testbed.LinkProfile, imageMiB int) *benchHost {
	b.Helper()
	dir, err := os.MkdirTemp("", "nixos-sd-bench-")
	if err != nil {
		b.Fatal(err)
	}
	progress := &syncLog{start: time.Now()}
	pool, err := testbed.NewHostPool(testbed.HostPoolOptions{
		WorkDir: filepath.Join(dir, "hosts"),
		Link:    &link,
		StandIn: testbed.StandInOptions{ImageMiB: imageMiB},
		Logf:    progress.logf,
	})
	if err != nil {
		b.Fatalf("host pool: %v", err)
	}
	bh := &benchHost{pool: pool, imageMiB: imageMiB, dir: dir, uiLog: &syncLog{start: time.Now()}}

	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	block, err := gossh.MarshalPrivateKey(priv, "")
	if err != nil {
		b.Fatal(err)
	}
	bh.keyFile = filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(bh.keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		b.Fatal(err)
	}
	signer, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := pool.Start(ctx, "i-bench", []string{strings.TrimSpace(string(gossh.MarshalAuthorizedKey(signer.PublicKey())))})
	if err != nil {
		pool.Close()
		b.Fatalf("starting the host: %v\nhost pool progress:\n%s", err, progress)
	}
	bh.host = h
	bh.addr = net.JoinHostPort(h.Addr, strconv.Itoa(h.Port))
	// The communicator and BasicUi log through the log package: keep that
	// for a failure's post-mortem only.
	prevLog, prevFlags := log.Writer(), log.Flags()
	log.SetOutput(writerFunc(bh.uiLog.write))
	log.SetFlags(0)
	bh.restore = func() {
		log.SetOutput(prevLog)
		log.SetFlags(prevFlags)
		if b.Failed() {
			b.Logf("host pool progress:\n%s", progress)
			b.Logf("payload output:\n%s", bh.uiLog)
			b.Logf("sshd log:\n%s", h.SSHDLog())
		}
	}
	comm, err := newSDKComm(bh.addr, signer, func(c net.Conn) {
		bh.connMu.Lock()
		bh.conns = append(bh.conns, c)
		bh.connMu.Unlock()
	})
	if err != nil {
		bh.close()
		b.Fatalf("connecting to the host with the SDK's SSH communicator at %s: %v", bh.addr, err)
	}
	bh.comm = comm
	if err := os.WriteFile(filepath.Join(h.Dir, "state", "standin.conf"), fmt.Appendf(nil, "IMAGE_MIB=%d\nCOMPRESS=1\nCACHED_BUILD_SECONDS=%d\n", imageMiB, benchBuildSeconds), 0o644); err != nil {
		bh.close()
		b.Fatal(err)
	}
	return bh
}

// newSDKComm connects as the SDK's StepConnectSSH does for Packer's defaults
// (communicator/step_connect_ssh.go, communicator/config.go): the key, any
// host key, no PTY, keep-alives every 5 s, scp transfers.
func newSDKComm(address string, signer gossh.Signer, track func(net.Conn)) (packersdk.Communicator, error) {
	dial := sdkssh.ConnectFunc("tcp", address)
	return sdkssh.New(address, &sdkssh.Config{
		Connection: func() (net.Conn, error) {
			c, err := dial()
			if err == nil && track != nil {
				track(c)
			}
			return c, err
		},
		SSHConfig: &gossh.ClientConfig{
			User:            "admin",
			Auth:            []gossh.AuthMethod{gossh.PublicKeys(signer)},
			HostKeyCallback: gossh.InsecureIgnoreHostKey(),
		},
		KeepAliveInterval: 5 * time.Second,
	})
}

func (h *benchHost) close() {
	// The communicator has no Close: end its connections before the host.
	h.connMu.Lock()
	for _, c := range h.conns {
		_ = c.Close()
	}
	h.connMu.Unlock()
	if h.restore != nil {
		h.restore()
	}
	_ = h.pool.Close()
	_ = os.RemoveAll(h.dir)
}

// engineResult is what the engine's process reports.
type engineResult struct {
	Remote   string                   `json:"remote"`
	Timings  map[string]time.Duration `json:"timings"`
	VmHWMKiB int64                    `json:"vmhwm_kib"`
	Error    string                   `json:"error"`
	Output   string                   `json:"output"`
	remote   string
	cpu      time.Duration
	cpuBusy  float64
}

// engine runs payload.Run in a process of its own (the test binary, through
// TestMain) with the given download_connections.
func (h *benchHost) engine(b *testing.B, conns int) *engineResult {
	b.Helper()
	h.runs++
	out := filepath.Join(h.dir, fmt.Sprintf("run-%d", h.runs))
	resFile := out + ".json"
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		benchChildEnv+"=1",
		"NIXOS_SD_BENCH_ADDR="+h.addr,
		"NIXOS_SD_BENCH_KEY="+h.keyFile,
		"NIXOS_SD_BENCH_OUT="+out,
		"NIXOS_SD_BENCH_CONNS="+strconv.Itoa(conns),
		"NIXOS_SD_BENCH_RESULT="+resFile,
	)
	cpu0 := machineCPU()
	outb, err := cmd.CombinedOutput()
	busy := machineCPU().busySince(cpu0)
	var r engineResult
	if b2, rerr := os.ReadFile(resFile); rerr == nil {
		_ = json.Unmarshal(b2, &r)
	}
	if err != nil || r.Error != "" {
		b.Fatalf("the engine's process (download_connections = %d): %v %s\n%s\n%s", conns, err, r.Error, outb, r.Output)
	}
	h.uiLog.logf("engine output:\n%s", r.Output)
	r.remote = r.Remote
	r.cpuBusy = busy
	if ps := cmd.ProcessState; ps != nil {
		r.cpu = ps.UserTime() + ps.SystemTime()
	}
	_ = os.RemoveAll(out)
	_ = os.Remove(resFile)
	return &r
}

func (h *benchHost) engineRow(b *testing.B, method string, conns int) benchRow {
	r := h.engine(b, conns)
	t := r.Timings
	fetch := max(t[payload.PhaseDownload], t[payload.PhaseChecksum]) + t[payload.PhaseVerify]
	comment, cpuLimit := "", false
	for _, l := range strings.Split(r.Output, "\n") {
		if strings.Contains(l, "Round trip to the host") {
			comment = strings.TrimSpace(l[strings.Index(l, "Round trip"):])
		}
		// The engine's own report (payload.cpuLimitNote).
		cpuLimit = cpuLimit || strings.Contains(l, "not the link, was the limit")
	}
	if cpuLimit {
		comment += "; the engine reports the CPU as the limit"
	}
	// Which of the two ended the fetch: the download or the host's checksum.
	comment += fmt.Sprintf("; download %.2fs, host's checksum %.2fs", t[payload.PhaseDownload].Seconds(), t[payload.PhaseChecksum].Seconds())
	return benchRow{method: method, fetch: fetch, total: fetch + t[payload.PhaseDecompress],
		rssMiB: float64(r.VmHWMKiB) / 1024, cpuBusy: r.cpuBusy, procCPU: r.cpu, comment: comment}
}

// baseline times fetch (the .img.zst onto disk) and then `zstd -d`.
func (h *benchHost) baseline(b *testing.B, method, remote string, fetch func(remote, local string) error) benchRow {
	b.Helper()
	dir := filepath.Join(h.dir, "baseline")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	zst := filepath.Join(dir, filepath.Base(remote))
	img := strings.TrimSuffix(zst, ".zst")
	cpu0 := machineCPU()
	start := time.Now()
	if err := fetch(remote, zst); err != nil {
		b.Fatalf("%s: %v", method, err)
	}
	fetched := time.Since(start)
	if out, err := exec.Command("zstd", "-d", "-q", "-f", zst, "-o", img).CombinedOutput(); err != nil {
		b.Fatalf("%s: zstd -d: %v\n%s", method, err, out)
	}
	total := time.Since(start)
	busy := machineCPU().busySince(cpu0)
	return benchRow{method: method, fetch: fetched, total: total, cpuBusy: busy, baseline: strings.HasPrefix(method, "(a)")}
}

func (h *benchHost) sdkDownload(remote, local string) error {
	f, err := os.Create(local)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := h.comm.Download(remote, f); err != nil {
		return err
	}
	return f.Close()
}

func (h *benchHost) scp(remote, local string) error {
	out, err := exec.Command("scp", "-q", "-i", h.keyFile, "-P", strconv.Itoa(h.host.Port),
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
		"admin@"+h.host.Addr+":"+remote, local).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func (l *syncLog) write(p []byte) (int, error) {
	l.logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// standinState is where the stand-in nix keeps its store inside the host;
// the host's folder holds it as state/.
const standinState = "/var/lib/nixos-sd-standin/"

// remoteSize is the size of the host's image file.
func (h *benchHost) remoteSize(b *testing.B, remote string) int64 {
	b.Helper()
	rel, ok := strings.CutPrefix(remote, standinState)
	if !ok {
		b.Fatalf("the image %s is not in the stand-in's store %s", remote, standinState)
	}
	st, err := os.Stat(filepath.Join(h.host.Dir, "state", filepath.FromSlash(rel)))
	if err != nil {
		b.Fatalf("reading the size of the host's image: %v", err)
	}
	return st.Size()
}

// benchChild is the engine's process: one payload.Run against the host at
// NIXOS_SD_BENCH_ADDR, its result and peak RSS written as JSON.
func benchChild() int {
	res := engineResult{}
	var uiOut syncLog
	uiOut.start = time.Now()
	write := func() int {
		res.Output = uiOut.String()
		res.VmHWMKiB = vmHWM()
		b, _ := json.Marshal(res)
		if err := os.WriteFile(os.Getenv("NIXOS_SD_BENCH_RESULT"), b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	fail := func(err error) int {
		res.Error = err.Error()
		write()
		return 1
	}
	log.SetOutput(writerFunc(uiOut.write))
	if f := os.Getenv("NIXOS_SD_BENCH_CPUPROFILE"); f != "" {
		// Where the engine's CPU goes: go tool pprof -top FILE.
		out, err := os.Create(f)
		if err != nil {
			return fail(err)
		}
		if err := pprof.StartCPUProfile(out); err != nil {
			return fail(err)
		}
		defer pprof.StopCPUProfile()
	}
	key, err := os.ReadFile(os.Getenv("NIXOS_SD_BENCH_KEY"))
	if err != nil {
		return fail(err)
	}
	signer, err := gossh.ParsePrivateKey(key)
	if err != nil {
		return fail(err)
	}
	addr := os.Getenv("NIXOS_SD_BENCH_ADDR")
	var conns []net.Conn
	comm, err := newSDKComm(addr, signer, func(c net.Conn) { conns = append(conns, c) })
	if err != nil {
		return fail(err)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	n, _ := strconv.Atoi(os.Getenv("NIXOS_SD_BENCH_CONNS"))
	cfg := &payload.Config{
		Flake:               benchFlake,
		BuildTimeout:        "20m",
		OutputDirectory:     os.Getenv("NIXOS_SD_BENCH_OUT"),
		DownloadConnections: n,
	}
	if errs := cfg.Prepare("bench", false); len(errs) > 0 {
		return fail(fmt.Errorf("payload configuration: %v", errs))
	}
	ui := &packersdk.BasicUi{
		Reader:      strings.NewReader(""),
		Writer:      writerFunc(uiOut.write),
		ErrorWriter: writerFunc(uiOut.write),
		PB:          &packersdk.NoopProgressTracker{},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	target := &payload.SSHTarget{Address: addr, Config: &gossh.ClientConfig{
		User:            "admin",
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
	}}
	r, err := payload.Run(ctx, ui, comm, cfg, payload.RunOptions{SSH: target})
	if err != nil {
		return fail(err)
	}
	res.Remote, res.Timings = r.RemoteImage, r.Timings
	return write()
}

// vmHWM is this process's peak resident set size in KiB
// (/proc/self/status).
func vmHWM() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return -1
}

// cpuTimes are the machine's CPU jiffies (/proc/stat): all and idle.
type cpuTimes struct{ total, idle int64 }

func machineCPU() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	var t cpuTimes
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		t.total += n
		if i == 3 || i == 4 { // idle, iowait
			t.idle += n
		}
	}
	return t
}

func (c cpuTimes) busySince(before cpuTimes) float64 {
	dt := c.total - before.total
	if dt <= 0 {
		return 0
	}
	return 1 - float64(c.idle-before.idle)/float64(dt)
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// limitOf says what limits a row: the link when the fetch runs at 80% of
// its rate or more, else the CPU when the machine was at least 90% busy,
// else the windows (channel or TCP window over the RTT).
func limitOf(r benchRow) string {
	if isLimitRow(r) {
		return "-"
	}
	rate := r.fileMB / r.fetch.Seconds() // MB/s
	if r.link.RateMbit > 0 && rate >= 0.8*r.link.RateMbit/8 {
		return "link"
	}
	if r.cpuBusy >= 0.9 {
		return "CPU"
	}
	if r.link.RTT > 0 {
		return "window/RTT"
	}
	return "?"
}

// isLimitRow reports whether r is (d) or (e), a limit rather than a method.
func isLimitRow(r benchRow) bool {
	return strings.HasPrefix(r.method, "(d)") || strings.HasPrefix(r.method, "(e)")
}

// targetOf is max((d), (e)) among a link's rows; 0 when neither is there.
func targetOf(rows []benchRow) time.Duration {
	var t time.Duration
	for _, r := range rows {
		if isLimitRow(r) {
			t = max(t, r.total)
		}
	}
	return t
}

func printBenchTable(imageMiB int, rows []benchRow, load0, load1 string) {
	var s strings.Builder
	fmt.Fprintf(&s, "\nTime to a verified .img on disk: image %d MiB (stand-in NixOS SD image, compresses about 3:1), %d cores, load average %s before, %s after\n",
		imageMiB, runtime.NumCPU(), load0, load1)
	fmt.Fprintf(&s, "%-22s %-18s %8s %8s %8s %8s %8s %9s %9s %8s %6s %-10s %s\n",
		"link", "method", "file MB", "fetch s", "MB/s", ".img s", "vs (a)", "fetch/(d)", "/target", "RSS MiB", "cpu%", "limit", "notes")
	var base, limit *benchRow
	var target time.Duration
	for i := range rows {
		r := &rows[i]
		if i == 0 || rows[i-1].link != r.link {
			base, limit = nil, nil
			end := i
			for end < len(rows) && rows[end].link == r.link {
				end++
			}
			target = targetOf(rows[i:end])
			for j := i; j < end; j++ {
				if rows[j].baseline {
					base = &rows[j]
				}
				if strings.HasPrefix(rows[j].method, "(d)") {
					limit = &rows[j]
				}
			}
		}
		vs, vsd, vst, rss, cpu := "-", "-", "-", "-", "-"
		fetch, rate := "-", "-"
		if r.fetch > 0 {
			fetch, rate = fmt.Sprintf("%.2f", r.fetch.Seconds()), fmt.Sprintf("%.1f", r.fileMB/r.fetch.Seconds())
		}
		if base != nil && !isLimitRow(*r) {
			vs = fmt.Sprintf("%.2fx", base.total.Seconds()/r.total.Seconds())
		}
		if limit != nil && r.fetch > 0 {
			vsd = fmt.Sprintf("%.2f", r.fetch.Seconds()/limit.fetch.Seconds())
		}
		if target > 0 && !isLimitRow(*r) {
			vst = fmt.Sprintf("%.2fx", r.total.Seconds()/target.Seconds())
		}
		if r.rssMiB > 0 {
			rss = fmt.Sprintf("%.0f", r.rssMiB)
		}
		if r.cpuBusy > 0 {
			cpu = fmt.Sprintf("%.0f", r.cpuBusy*100)
		}
		notes := r.comment
		if r.procCPU > 0 {
			notes = strings.TrimSpace(fmt.Sprintf("engine CPU %.1fs; %s", r.procCPU.Seconds(), notes))
		}
		fmt.Fprintf(&s, "%-22s %-18s %8.1f %8s %8s %8.2f %8s %9s %9s %8s %6s %-10s %s\n",
			linkName(r.link), r.method, r.fileMB, fetch, rate, r.total.Seconds(),
			vs, vsd, vst, rss, cpu, limitOf(*r), notes)
	}
	s.WriteString("\nvs (a): how many times faster than (a) to a verified .img; fetch/(d): the fetch's time over the link limit's; /target: .img s over the link's max((d), (e)).\n")
	s.WriteString("cpu%: the whole machine's CPU use during the run (/proc/stat); limit: link = within 80% of the link rate, CPU = machine at least 90% busy, window/RTT = neither.\n")
	fmt.Fprint(os.Stdout, s.String())
}
