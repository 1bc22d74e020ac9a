// Package testbed is an offline stand-in for AWS and for the instances the
// plugin rents: moto's EC2 API behind a fault proxy, a fake public IP service,
// and for every running moto instance a host in a network namespace with a
// real sshd and a stand-in nix (the hosts half: host*.go).
//
// Nothing here talks to AWS. EC2 is emulated by moto (see moto_launcher.py for
// where moto is patched to behave like AWS), the NixOS build is a stand-in.
package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// DefaultRegions are the regions the watcher and leak checker cover when
// Options.Regions is empty.
var DefaultRegions = []string{"us-east-2", "us-east-1", "eu-west-1"}

// Options configure the test bed.
type Options struct {
	// WorkDir holds moto's log, the AMI catalogue and the hosts' folders;
	// empty = a new temporary folder, removed by Close.
	WorkDir string
	// Regions the watcher and the leak checker cover; empty = DefaultRegions.
	// The first is AWS_REGION in Env.
	Regions []string
	// BootDelay is how long a host takes to accept SSH after its instance runs.
	BootDelay time.Duration
	// Link shapes the hosts' network (rate, RTT); nil = unshaped.
	Link *LinkProfile
	// StandIn configures the stand-in nix's image.
	StandIn StandInOptions
	// DebianArch is the architecture of the instances' Debian root
	// (HostPoolOptions.DebianArch): "" for this machine's, "arm64" for
	// real aarch64 hosts under emulation.
	DebianArch string
	// Logf receives progress lines; nil = log.Printf.
	Logf func(string, ...any)
}

// Testbed is a running test bed. Close it.
type Testbed struct {
	opts       Options
	workDir    string
	ownWorkDir bool
	moto       *motoServer
	proxy      *Proxy
	ip         *ipServer
	s3         *s3Front
	channels   *ChannelServer
	pool       *HostPool
	watch      *watcher
	direct     map[string]*ec2.Client
	closeOnce  sync.Once
	closeErr   error
}

// Start starts moto, the fault proxy, the public IP server, the host pool and
// the watcher. It needs root (network namespaces) and `make testbed-deps`.
func Start(ctx context.Context, opts Options) (tb *Testbed, err error) {
	if len(opts.Regions) == 0 {
		opts.Regions = append([]string(nil), DefaultRegions...)
	}
	if opts.Logf == nil {
		opts.Logf = log.Printf
	}
	tb = &Testbed{opts: opts, workDir: opts.WorkDir, direct: map[string]*ec2.Client{}}
	defer func() {
		if err != nil {
			tb.Close()
			tb = nil
		}
	}()
	if tb.workDir == "" {
		if tb.workDir, err = os.MkdirTemp("", "nixos-sd-testbed-"); err != nil {
			return tb, err
		}
		tb.ownWorkDir = true
	} else if err = os.MkdirAll(tb.workDir, 0o755); err != nil {
		return tb, err
	}
	if tb.workDir, err = filepath.Abs(tb.workDir); err != nil {
		return tb, err
	}
	for _, f := range []string{"aws-config", "aws-credentials"} {
		if err = os.WriteFile(filepath.Join(tb.workDir, f), nil, 0o644); err != nil {
			return tb, err
		}
	}
	if tb.moto, err = startMoto(ctx, tb.workDir); err != nil {
		return tb, fmt.Errorf("testbed: moto: %w", err)
	}
	if tb.proxy, err = newProxy(tb.moto.url, opts.Logf); err != nil {
		return tb, err
	}
	if tb.ip, err = startIPServer(FakePublicIP); err != nil {
		return tb, err
	}
	if tb.s3, err = startS3Front(tb.moto.url); err != nil {
		return tb, err
	}
	if tb.channels, err = startChannelServer(); err != nil {
		return tb, err
	}
	for _, r := range opts.Regions {
		tb.direct[r] = newEC2Client(r, tb.moto.url)
		if err = createKMSKeys(ctx, tb.moto.url, r); err != nil {
			return tb, fmt.Errorf("testbed: KMS keys in %s: %w", r, err)
		}
	}
	tb.pool, err = NewHostPool(HostPoolOptions{
		WorkDir:      filepath.Join(tb.workDir, "hosts"),
		BootDelay:    opts.BootDelay,
		Link:         opts.Link,
		StandIn:      opts.StandIn,
		DebianArch:   opts.DebianArch,
		GatewayNames: s3Names(opts.Regions),
		Logf:         opts.Logf,
	})
	if err != nil {
		return tb, fmt.Errorf("testbed: hosts: %w", err)
	}
	hostsPath := tb.HostsFile()
	static := map[string][]string{s3Host: {"127.0.0.1 " + strings.Join(s3Names(opts.Regions), " ")}}
	if err = writeHostsFile(hostsPath, static); err != nil {
		return tb, err
	}
	tb.watch = startWatcher(tb.moto.url, tb.ip.ip, hostsPath, tb.pool, tb.direct, opts.Regions, tb.proxy, opts.Logf)
	tb.watch.setStatic(s3Host, static[s3Host])
	opts.Logf("testbed: EC2 (moto %s) at %s, fault proxy at %s, public IP %s at %s, work dir %s",
		MotoVersion, tb.moto.url, tb.proxy.URL(), FakePublicIP, tb.ip.URL(), tb.workDir)
	return tb, nil
}

func newEC2Client(region, endpoint string) *ec2.Client {
	cfg := aws.Config{
		Region:      region,
		Credentials: credentials.NewStaticCredentialsProvider("testing", "testing", ""),
		AppID:       TestbedAppID,
	}
	return ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(endpoint) })
}

// Close stops the watcher, the hosts, moto and the servers, and removes a
// temporary work folder. It is safe to call more than once.
func (tb *Testbed) Close() error {
	tb.closeOnce.Do(func() {
		var errs []error
		if tb.watch != nil {
			tb.watch.Close()
		}
		if tb.pool != nil {
			if err := tb.pool.Close(); err != nil {
				errs = append(errs, fmt.Errorf("stopping hosts: %w", err))
			}
		}
		if tb.proxy != nil {
			tb.proxy.Close()
		}
		if tb.ip != nil {
			tb.ip.Close()
		}
		if tb.s3 != nil {
			tb.s3.Close()
		}
		if tb.channels != nil {
			tb.channels.Close()
		}
		if tb.moto != nil {
			tb.moto.Close()
		}
		if tb.ownWorkDir && tb.workDir != "" {
			if err := os.RemoveAll(tb.workDir); err != nil {
				errs = append(errs, err)
			}
		}
		tb.closeErr = errors.Join(errs...)
	})
	return tb.closeErr
}

// WorkDir is the test bed's work folder (moto.log, amis.json, hosts/).
func (tb *Testbed) WorkDir() string { return tb.workDir }

// Regions are the regions the watcher and leak checker cover.
func (tb *Testbed) Regions() []string { return append([]string(nil), tb.opts.Regions...) }

// EC2Endpoint is the fault proxy's URL, where clients send EC2 calls.
func (tb *Testbed) EC2Endpoint() string { return tb.proxy.URL() }

// MotoEndpoint is moto's own URL (no recording, no faults).
func (tb *Testbed) MotoEndpoint() string { return tb.moto.url }

// Env is the environment for a process that should use the test bed's EC2:
// fixed test credentials, the first region, every AWS endpoint at the fault
// proxy, no instance metadata, empty AWS config files. Append it to an
// environment without AWS_* variables (CommandEnv does both); it cannot unset
// AWS_SESSION_TOKEN or AWS_PROFILE by itself.
func (tb *Testbed) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=testing",
		"AWS_SECRET_ACCESS_KEY=testing",
		"AWS_REGION=" + tb.opts.Regions[0],
		"AWS_DEFAULT_REGION=" + tb.opts.Regions[0],
		"AWS_ENDPOINT_URL=" + tb.proxy.URL(),
		"AWS_ENDPOINT_URL_EC2=" + tb.proxy.URL(),
		"AWS_ENDPOINT_URL_STS=" + tb.proxy.URL(),
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + filepath.Join(tb.workDir, "aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(tb.workDir, "aws-credentials"),
		"NIXOS_SD_TESTBED_HOSTS=" + tb.HostsFile(),
	}
}

// HostsFile is a hosts(5) file naming the running instances' public and
// private DNS names (the machine's /etc/hosts first). Env names it as
// NIXOS_SD_TESTBED_HOSTS; the end-to-end harness mounts it over /etc/hosts
// for Packer.
func (tb *Testbed) HostsFile() string { return filepath.Join(tb.workDir, "etc-hosts") }

// CommandEnv is os.Environ() without any AWS_* variable, plus Env().
func (tb *Testbed) CommandEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			env = append(env, kv)
		}
	}
	return append(env, tb.Env()...)
}

// EC2Client is an EC2 client for a region that goes through the fault proxy
// (its calls are recorded and rules apply).
func (tb *Testbed) EC2Client(region string) *ec2.Client {
	return newEC2Client(region, tb.proxy.URL())
}

// MotoClient is an EC2 client straight to moto: not recorded, never faulted.
func (tb *Testbed) MotoClient(region string) *ec2.Client {
	return newEC2Client(region, tb.moto.url)
}

// Channels is the stand-in NixOS channel server (nixpkgs_channels_url).
func (tb *Testbed) Channels() *ChannelServer { return tb.channels }

// PublicIPURL serves PublicIP as text.
func (tb *Testbed) PublicIPURL() string { return tb.ip.URL() }

// PublicIP is the fake public IPv4 the PublicIPURL serves.
func (tb *Testbed) PublicIP() string { return tb.ip.ip }

// NextSSHEndpoint is where the next instance that starts running will be
// reachable by SSH.
func (tb *Testbed) NextSSHEndpoint() (host string, port int) { return tb.pool.NextEndpoint() }

// Proxy is the fault proxy.
func (tb *Testbed) Proxy() *Proxy { return tb.proxy }

// Hosts is the host pool; a host's id is its instance's id.
func (tb *Testbed) Hosts() *HostPool { return tb.pool }

// EndInstance stops or terminates an instance as EC2 would for the given
// state reason code (for example Client.VolumeLimitExceeded), straight in
// moto; spotStatus, when set, becomes its spot request's status.
func (tb *Testbed) EndInstance(ctx context.Context, region, id, code string, stop bool, spotStatus string) error {
	return endInstance(ctx, tb.moto.url, region, id, code, stop, spotStatus)
}

// Interrupt takes a spot instance back as EC2 does: terminated with state
// reason Server.SpotInstanceTermination, its spot request closed with status
// instance-terminated-no-capacity.
func (tb *Testbed) Interrupt(ctx context.Context, region, id string) error {
	return tb.EndInstance(ctx, region, id, "Server.SpotInstanceTermination", false, "instance-terminated-no-capacity")
}

// SetShutdownMinute sets how long a minute of a scheduled shutdown
// ("shutdown -P +m") lasts on the hosts from now on; 0 = a minute. Tests of
// the user data's lifetime cap shorten it, and set it back when done.
func (tb *Testbed) SetShutdownMinute(d time.Duration) { tb.watch.setMinute(d) }

// WatcherErrors lists what went wrong turning instances into hosts.
func (tb *Testbed) WatcherErrors() []string { return tb.watch.errors() }

// Leaks lists what is left in moto in the test bed's regions, one readable
// line per resource ("us-east-2: security group sg-123 (name)"); see leaks.go
// for what counts.
func (tb *Testbed) Leaks(ctx context.Context) ([]string, error) {
	var all []string
	for _, r := range tb.opts.Regions {
		l, err := leaks(ctx, tb.direct[r], r)
		if err != nil {
			return all, err
		}
		all = append(all, l...)
	}
	return all, nil
}

// DumpLogs writes moto's last log lines, the proxy's call record and the
// watcher's errors, for a failed test.
func (tb *Testbed) DumpLogs(w io.Writer) {
	if tb.moto != nil {
		fmt.Fprintf(w, "--- moto log (last 60 lines of %s, without successful requests)\n%s\n", tb.moto.logPath, tailFile(tb.moto.logPath, 60))
	}
	if tb.proxy != nil {
		fmt.Fprintf(w, "--- EC2 calls through the fault proxy\n%s", tb.proxy.Summary())
	}
	if tb.watch != nil {
		if errs := tb.watch.errors(); len(errs) > 0 {
			fmt.Fprintf(w, "--- watcher errors\n%s\n", strings.Join(errs, "\n"))
		}
	}
	if tb.pool != nil {
		fmt.Fprintf(w, "--- hosts running: %v\n", tb.pool.Running())
	}
}
