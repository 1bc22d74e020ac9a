package builder

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"golang.org/x/crypto/ssh"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/awscommon"
	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/debianami"
	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/hostkey"
	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/payload"
)

func testBuilder(t *testing.T, f *fakeEC2, extra map[string]interface{}) *Builder {
	t.Helper()
	raw := map[string]interface{}{
		"region":           "us-east-2",
		"output_directory": t.TempDir() + "/out",
		"poll_interval":    "1ms",
		"state_timeout":    "1s",
		"ssh_source_cidrs": []string{"198.51.100.7/32"},
	}
	for k, v := range extra {
		raw[k] = v
	}
	b := &Builder{newEC2: func(context.Context) (awscommon.EC2API, error) { return f, nil }}
	keys, _, err := b.Prepare(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != len(GeneratedDataKeys) {
		t.Errorf("Prepare returned generated data keys %v", keys)
	}
	return b
}

func TestRunPreflightFailureCreatesNothing(t *testing.T) {
	f := newFakeEC2()
	b := testBuilder(t, f, map[string]interface{}{"availability_zone": "us-east-2z"})
	art, err := b.Run(context.Background(), newTestUI(), &packersdk.MockHook{})
	if err == nil || art != nil {
		t.Fatalf("Run = %v, %v; want a preflight error", art, err)
	}
	if !strings.Contains(err.Error(), "availability_zone") {
		t.Errorf("error = %v", err)
	}
	if m := mutating(f.Calls()); len(m) > 0 {
		t.Errorf("mutating calls after a preflight failure: %v", m)
	}
}

func TestRunLaunchFailureCleansUp(t *testing.T) {
	stubLookup(t, func(debianami.Query) (*debianami.Image, error) {
		return &debianami.Image{ID: "ami-0123456789abcdef0", RootDeviceName: "/dev/xvda"}, nil
	})
	f := newFakeEC2()
	f.createFleet = func(int, *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error) {
		return nil, apiErr("InsufficientInstanceCapacity", "no capacity")
	}
	b := testBuilder(t, f, nil)
	_, err := b.Run(context.Background(), newTestUI(), &packersdk.MockHook{})
	if err == nil || !strings.Contains(err.Error(), "on_demand_fallback") {
		t.Fatalf("err = %v", err)
	}
	var created, deleted []string
	for _, c := range mutating(f.Calls()) {
		switch c {
		case "CreateSecurityGroup", "CreateLaunchTemplate":
			created = append(created, c)
		case "DeleteSecurityGroup", "DeleteLaunchTemplate":
			deleted = append(deleted, c)
		}
	}
	if strings.Join(created, ",") != "CreateSecurityGroup,CreateLaunchTemplate" || strings.Join(deleted, ",") != "DeleteLaunchTemplate,DeleteSecurityGroup" {
		t.Errorf("created %v, deleted %v (want reverse order)", created, deleted)
	}
	if f.count("TerminateInstances") != 0 {
		t.Error("terminated an instance that was never launched")
	}
}

func TestRunCancelledBeforeStart(t *testing.T) {
	f := newFakeEC2()
	b := testBuilder(t, f, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Run(ctx, newTestUI(), &packersdk.MockHook{}); err == nil {
		t.Fatal("a cancelled build succeeded")
	}
	if m := mutating(f.Calls()); len(m) > 0 {
		t.Errorf("mutating calls after cancel: %v", m)
	}
}

// execLog records the commands the in-process SSH server was asked to run.
type execLog struct {
	mu   sync.Mutex
	cmds []string
}

func (l *execLog) add(c string) { l.mu.Lock(); l.cmds = append(l.cmds, c); l.mu.Unlock() }
func (l *execLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.cmds...)
}

// sshServer is a minimal in-process SSH server: it presents the host key
// the build delivered in the launch template's user data (another key when
// impostor is set), accepts only the login key delivered there, and answers
// every exec request with exit status 0, recording the command.
func sshServer(t *testing.T, f *fakeEC2, impostor bool) (string, int, *atomic.Int32, *execLog) {
	t.Helper()
	var logins atomic.Int32
	execs := &execLog{}
	userData := func() []byte {
		lts := inputsOf[*ec2.CreateLaunchTemplateInput](f, "CreateLaunchTemplate")
		if len(lts) == 0 {
			return nil
		}
		ud, _ := base64.StdEncoding.DecodeString(aws.ToString(lts[len(lts)-1].LaunchTemplateData.UserData))
		return ud
	}
	serverConfig := func() (*ssh.ServerConfig, error) {
		conf := &ssh.ServerConfig{
			PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
				if meta.User() != "admin" || !strings.Contains(string(userData()), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))) {
					return nil, errors.New("key not in user data")
				}
				logins.Add(1)
				return nil, nil
			},
		}
		var hostSigner ssh.Signer
		if impostor {
			_, priv, _ := ed25519.GenerateKey(rand.Reader)
			signer, err := ssh.NewSignerFromKey(priv)
			if err != nil {
				return nil, err
			}
			hostSigner = signer
		} else {
			cc, err := parseCloudConfig(userData())
			if err != nil {
				return nil, err
			}
			if cc.SSHKeys == nil {
				return nil, errors.New("no ssh_keys in the user data")
			}
			signer, err := ssh.ParsePrivateKey([]byte(cc.SSHKeys.ED25519Private))
			if err != nil {
				return nil, err
			}
			hostSigner = signer
		}
		conf.AddHostKey(hostSigner)
		return conf, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				conf, err := serverConfig()
				if err != nil {
					c.Close()
					return
				}
				_, chans, reqs, err := ssh.NewServerConn(c, conf)
				if err != nil {
					c.Close()
					return
				}
				go ssh.DiscardRequests(reqs)
				for nc := range chans {
					if nc.ChannelType() != "session" {
						nc.Reject(ssh.UnknownChannelType, "test server: sessions only")
						continue
					}
					ch, chReqs, err := nc.Accept()
					if err != nil {
						continue
					}
					go func() {
						defer ch.Close()
						for r := range chReqs {
							if r.Type != "exec" {
								r.Reply(false, nil)
								continue
							}
							var p struct{ Command string }
							_ = ssh.Unmarshal(r.Payload, &p)
							execs.add(p.Command)
							r.Reply(true, nil)
							if strings.Contains(p.Command, "nixos-sd-watchdog.XXXXXXXXXX") {
								// What mktemp made for the heartbeat.
								_, _ = ch.Write([]byte("/tmp/nixos-sd-watchdog.0123456789/heartbeat\n"))
							}
							ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
							return
						}
					}()
				}
			}()
		}
	}()
	addr := ln.Addr().(*net.TCPAddr)
	return "127.0.0.1", addr.Port, &logins, execs
}

func TestRunWholePipeline(t *testing.T) {
	stubLookup(t, func(debianami.Query) (*debianami.Image, error) {
		return &debianami.Image{ID: "ami-0123456789abcdef0", RootDeviceName: "/dev/xvda"}, nil
	})
	f := newFakeEC2()
	terminated := atomic.Bool{}
	f.instanceState = func(n int, id string) types.InstanceStateName {
		if terminated.Load() {
			return types.InstanceStateNameTerminated
		}
		return types.InstanceStateNameRunning
	}
	host, port, logins, execs := sshServer(t, f, false)
	out := t.TempDir()
	img := out + "/nixos.img"
	stubPayload(t, func(ctx context.Context, cfg *payload.Config, opts payload.RunOptions) (*payload.Result, error) {
		if opts.ManifestExtra["instance_id"] != "i-0123456789abcdef0" {
			t.Errorf("manifest extra = %v", opts.ManifestExtra)
		}
		if opts.Phase == nil {
			t.Error("the builder passes no Phase callback; the output cannot show the payload's phases")
		} else {
			for _, p := range []string{payload.PhaseUpload, payload.PhaseInstallNix, payload.PhaseBuild, payload.PhaseLocate, payload.PhaseDownload} {
				opts.Phase(p)
			}
		}
		if err := os.WriteFile(img+".json", []byte(`{"image": "nixos.img"}`), 0o644); err != nil {
			t.Fatal(err)
		}
		return &payload.Result{ImagePath: img, SHA256: "ab12", Files: []string{img, img + ".sha256", img + ".json"}}, nil
	})
	b := testBuilder(t, f, map[string]interface{}{"ssh_host": host, "ssh_port": port, "packer_build_name": "rpi"})
	// TerminateInstances flips the fake's instances to terminated.
	f2 := &terminatingFake{fakeEC2: f, terminated: &terminated}
	b.newEC2 = func(context.Context) (awscommon.EC2API, error) { return f2, nil }

	ui := newTestUI()
	art, err := b.Run(context.Background(), ui, &packersdk.MockHook{})
	if err != nil {
		t.Fatal(err)
	}
	checkPhaseReport(t, ui.String(), true)
	var m map[string]any
	if b, err := os.ReadFile(img + ".json"); err != nil || json.Unmarshal(b, &m) != nil {
		t.Fatalf("manifest: %v %s", err, b)
	}
	if cost, _ := m["cost"].(map[string]any); cost["instance_type"] != "c7g.2xlarge" || cost["price_per_hour_usd"] != 0.0812 || cost["launched"] != true {
		t.Errorf("the manifest's cost = %v", m["cost"])
	}
	if ps, _ := m["phases"].([]any); len(ps) != 8 {
		t.Errorf("the manifest's phases = %v, want 8 (preflight to cleanup)", m["phases"])
	}
	if m["image"] != "nixos.img" {
		t.Errorf("the builder's update lost the payload's manifest fields: %v", m)
	}
	if logins.Load() == 0 {
		t.Error("never logged in with the delivered key")
	}
	armed := false
	for _, c := range execs.all() {
		armed = armed || strings.Contains(c, "nohup setsid") && strings.Contains(c, "mktemp -d")
	}
	if !armed {
		t.Errorf("the instance's watchdog was never armed; commands run: %q", execs.all())
	}
	if art.Id() != img || art.BuilderId() != BuilderID || len(art.Files()) != 3 {
		t.Errorf("artifact %q %q %v", art.Id(), art.BuilderId(), art.Files())
	}
	gd, _ := art.State("generated_data").(map[string]interface{})
	if gd["InstanceType"] != "c7g.2xlarge" || gd["AvailabilityZone"] != "us-east-2a" || gd["SourceAMI"] != "ami-0123456789abcdef0" ||
		gd["SpotPrice"] != "0.0812" || gd["InstanceID"] != "i-0123456789abcdef0" || gd["ImageSHA256"] != "ab12" {
		t.Errorf("generated data = %v", gd)
	}
	if _, leaked := gd["SSHPrivateKey"]; leaked {
		t.Error("the artifact's generated data carries the SSH private key")
	}
	if gd["Lifecycle"] != "spot" || gd["PricePerHour"] != "0.0812" || gd["VolumeSize"] != "30" || gd["EstimatedCost"] == "" {
		t.Errorf("generated data lacks the cost: %v", gd)
	}
	if !strings.HasPrefix(gd["Phases"].(string), "preflight=") || !strings.Contains(gd["Phases"].(string), " cleanup=") {
		t.Errorf("generated data Phases = %q", gd["Phases"])
	}
	if !strings.Contains(gd["Timings"].(string), "launch=") {
		t.Errorf("timings = %v", gd["Timings"])
	}
	for _, want := range []string{"TerminateInstances", "DeleteFleets", "DeleteLaunchTemplate", "DeleteSecurityGroup"} {
		if f.count(want) != 1 {
			t.Errorf("%s calls = %d after a successful build", want, f.count(want))
		}
	}
	// Names and tags.
	cs := inputsOf[*ec2.CreateSecurityGroupInput](f, "CreateSecurityGroup")[0]
	if !strings.HasPrefix(aws.ToString(cs.GroupName), "packer-nixos-sd-rpi-") {
		t.Errorf("group name = %q", aws.ToString(cs.GroupName))
	}
	var buildID string
	for _, tg := range cs.TagSpecifications[0].Tags {
		if aws.ToString(tg.Key) == BuildIDTag {
			buildID = aws.ToString(tg.Value)
		}
	}
	if len(buildID) != 36 {
		t.Errorf("build id tag = %q, want a uuid", buildID)
	}
}

type terminatingFake struct {
	*fakeEC2
	terminated *atomic.Bool
}

func (f *terminatingFake) TerminateInstances(ctx context.Context, in *ec2.TerminateInstancesInput, o ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error) {
	f.terminated.Store(true)
	return f.fakeEC2.TerminateInstances(ctx, in, o...)
}

// An SSH host presenting a key other than the one in the user data is
// refused at once (not retried until ssh_timeout), with the reason, and the
// build cleans up everything it created.
func TestRunRefusesImpostorHost(t *testing.T) {
	stubLookup(t, func(debianami.Query) (*debianami.Image, error) {
		return &debianami.Image{ID: "ami-0123456789abcdef0", RootDeviceName: "/dev/xvda"}, nil
	})
	f := newFakeEC2()
	terminated := atomic.Bool{}
	f.instanceState = func(int, string) types.InstanceStateName {
		if terminated.Load() {
			return types.InstanceStateNameTerminated
		}
		return types.InstanceStateNameRunning
	}
	host, port, logins, execs := sshServer(t, f, true)
	stubPayload(t, func(context.Context, *payload.Config, payload.RunOptions) (*payload.Result, error) {
		t.Error("the build ran on an impostor host")
		return nil, errors.New("impostor")
	})
	b := testBuilder(t, f, map[string]interface{}{"ssh_host": host, "ssh_port": port, "ssh_timeout": "5m"})
	f2 := &terminatingFake{fakeEC2: f, terminated: &terminated}
	b.newEC2 = func(context.Context) (awscommon.EC2API, error) { return f2, nil }
	started := time.Now()
	_, err := b.Run(context.Background(), newTestUI(), &packersdk.MockHook{})
	var mm *hostkey.MismatchError
	if !errors.As(err, &mm) {
		t.Fatalf("build error = %v, want the host key refusal", err)
	}
	if d := time.Since(started); d > time.Minute {
		t.Errorf("the refusal took %v: the wrong key was retried", d)
	}
	if logins.Load() != 0 || len(execs.all()) != 0 {
		t.Errorf("the build logged in %d times and ran %q on an impostor", logins.Load(), execs.all())
	}
	for _, want := range []string{"TerminateInstances", "DeleteFleets", "DeleteLaunchTemplate", "DeleteSecurityGroup"} {
		if f.count(want) != 1 {
			t.Errorf("%s calls = %d after a refused host", want, f.count(want))
		}
	}
}
