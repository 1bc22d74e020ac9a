package testbed

// The watcher turns moto's instances into stand-in hosts.
//
// What moto 5.2.5 does (verified with boto3 against moto_server, and by the
// e2e tests in this package):
//   - RunInstances and CreateFleet (type instant, spot, launch template) put
//     instances into "pending" (moto_launcher.py, patch 7); the watcher makes
//     them "running" once their host accepts connections, as a booting
//     instance does. TerminateInstances makes them "terminated" at once (no
//     shutting-down phase).
//   - An instance launched by CreateFleet or RunInstances from a launch
//     template gets every field of it (moto_launcher.py, patch 5):
//     DescribeInstanceAttribute(userData) returns the template's base64 user
//     data unchanged.
//   - DescribeKeyPairs with IncludePublicKey=true returns an imported key's
//     public key (OpenSSH text). ImportKeyPair rejects material that is not a
//     valid OpenSSH public key (InvalidKeyPair.Format). The proxy also keeps
//     what ImportKeyPair sent, used when the key pair is already gone.
//   - The instance's root volume is the AMI's root device with the template's
//     size, type and encryption, and is deleted on termination.
//
// The watcher polls DescribeInstances straight at moto (not through the fault
// proxy, so its calls are neither recorded nor faulted): every 100 ms for 15 s
// after any mutating call through the proxy, every second otherwise. A pending
// instance gets a host (HostPool.StartInstance, host id = instance id) with
// its key pair's key and its user data, which the cloud-init stand-in plays
// (cloudinit.go); a stopping, stopped, shutting-down, terminated or
// vanished instance has its host stopped.

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

const (
	watchFastInterval = 100 * time.Millisecond
	watchSlowInterval = time.Second
	watchHotFor       = 15 * time.Second
)

type watchedInstance struct {
	region   string
	starting bool // HostPool.Start in flight
	started  bool // host is up
	wantStop bool // instance ended while the host was starting
	stopped  bool
	// shutdownApplied: the host's shutdown was passed on to moto.
	shutdownApplied bool
	// shutdownSeen records of the host's shutdown log are read;
	// shutdownCall is the pending power-off, due at shutdownDue.
	shutdownSeen int
	shutdownCall string
	shutdownDue  time.Time
	// networked: the host has its instance's addresses and groups.
	networked bool
}

type watcher struct {
	motoURL   string
	hostsPath string              // the instances' DNS names (setDNS); empty = none
	dns       map[string][]string // instance id -> hosts file lines
	callerIP  string              // the public address the test bed's callers have
	pool      *HostPool
	clients   map[string]*ec2.Client // straight to moto, per region
	regions   []string
	proxy     *Proxy
	logf      func(string, ...any)

	mu        sync.Mutex
	minute    time.Duration // a minute of shutdown's TIME (setMinute)
	instances map[string]*watchedInstance
	errs      []string
	failed    map[string]bool
	cidrCache map[string]cidrs

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startWatcher(motoURL, callerIP, hostsPath string, pool *HostPool, clients map[string]*ec2.Client, regions []string, proxy *Proxy, logf func(string, ...any)) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{motoURL: motoURL, hostsPath: hostsPath, dns: map[string][]string{}, callerIP: callerIP, failed: map[string]bool{}, cidrCache: map[string]cidrs{}, pool: pool, clients: clients, regions: regions, proxy: proxy, logf: logf, minute: time.Minute,
		instances: map[string]*watchedInstance{}, cancel: cancel}
	w.wg.Add(1)
	go w.loop(ctx)
	return w
}

// setMinute sets how long a minute of shutdown's TIME lasts; d <= 0 = a
// minute. A power-off already scheduled keeps its time.
func (w *watcher) setMinute(d time.Duration) {
	if d <= 0 {
		d = time.Minute
	}
	w.mu.Lock()
	w.minute = d
	w.mu.Unlock()
}

func (w *watcher) Close() {
	w.cancel()
	w.wg.Wait()
}

func (w *watcher) loop(ctx context.Context) {
	defer w.wg.Done()
	for {
		for _, region := range w.regions {
			w.poll(ctx, region)
		}
		interval := watchSlowInterval
		if last := w.proxy.lastMutation(); !last.IsZero() && time.Since(last) < watchHotFor {
			interval = watchFastInterval
		}
		select {
		case <-ctx.Done():
			return
		case <-w.proxy.mutated:
		case <-time.After(interval):
		}
	}
}

func (w *watcher) poll(ctx context.Context, region string) {
	client := w.clients[region]
	seen := map[string]string{}
	var all []types.Instance
	p := ec2.NewDescribeInstancesPaginator(client, &ec2.DescribeInstancesInput{})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			if ctx.Err() == nil {
				w.logf("watcher: %s: DescribeInstances: %v", region, err)
			}
			return
		}
		for _, r := range out.Reservations {
			all = append(all, r.Instances...)
			for _, inst := range r.Instances {
				id := aws.ToString(inst.InstanceId)
				state := ""
				if inst.State != nil {
					state = string(inst.State.Name)
				}
				seen[id] = state
				switch state {
				case "pending":
					w.ensureHost(ctx, region, inst)
				case "running":
					w.ensureHost(ctx, region, inst)
					w.applyShutdown(ctx, region, inst)
				case "shutting-down", "terminated", "stopping", "stopped":
					w.ensureStopped(id, state)
				}
			}
		}
	}
	w.refreshNetworks(ctx, region, all)
	// Instances moto no longer lists are gone too.
	w.mu.Lock()
	var gone []string
	for id, wi := range w.instances {
		if _, ok := seen[id]; !ok && wi.region == region && !wi.stopped {
			gone = append(gone, id)
		}
	}
	w.mu.Unlock()
	for _, id := range gone {
		w.ensureStopped(id, "vanished")
	}
}

func (w *watcher) ensureHost(ctx context.Context, region string, inst types.Instance) {
	id := aws.ToString(inst.InstanceId)
	w.mu.Lock()
	if _, ok := w.instances[id]; ok {
		w.mu.Unlock()
		return
	}
	wi := &watchedInstance{region: region, starting: true}
	w.instances[id] = wi
	w.mu.Unlock()

	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		keys, userData, err := w.bootData(ctx, region, inst)
		if err != nil {
			w.fail("%s: instance %s: collecting its key pair and user data: %v", region, id, err)
		}
		w.logf("watcher: %s: instance %s is booting; starting its host with %d key pair key(s) and %d bytes of user data", region, id, len(keys), len(userData))
		h, err := w.pool.StartInstance(ctx, id, keys, userData)
		if err != nil {
			w.mu.Lock()
			wi.starting = false
			w.mu.Unlock()
			if ctx.Err() == nil {
				w.fail("%s: instance %s: starting its host: %v", region, id, err)
			}
			return
		}
		w.logf("watcher: %s: instance %s reachable by SSH at %s:%d", region, id, h.Addr, h.Port)
		// The instance runs once its host has its addresses and groups.
		v, netErr := w.view(ctx, region, nil)
		if netErr == nil {
			netErr = w.applyNetwork(ctx, region, inst, v)
		}
		var runErr error
		if netErr == nil {
			w.setDNS(id, &inst)
			runErr = w.markRunning(ctx, region, id)
		}
		w.mu.Lock()
		wi.starting = false
		wi.started = true
		wi.networked = netErr == nil
		stopNow := wi.wantStop
		w.mu.Unlock()
		if !stopNow && ctx.Err() == nil {
			if netErr != nil {
				w.fail("%s: instance %s: giving its host its addresses and security groups: %v", region, id, netErr)
			} else if runErr != nil {
				w.fail("%s: instance %s: marking it running: %v", region, id, runErr)
			}
		}
		if stopNow {
			w.stopHost(id)
		}
	}()
}

func (w *watcher) ensureStopped(id, state string) {
	w.mu.Lock()
	wi, ok := w.instances[id]
	if !ok {
		// Ended before the watcher saw it running: never give it a host.
		w.instances[id] = &watchedInstance{stopped: true}
		w.mu.Unlock()
		return
	}
	if wi.stopped || wi.wantStop {
		w.mu.Unlock()
		return
	}
	if wi.starting {
		wi.wantStop = true
		w.mu.Unlock()
		return
	}
	w.mu.Unlock()
	w.logf("watcher: %s: instance %s is %s; stopping its host", wi.region, id, state)
	w.stopHost(id)
}

func (w *watcher) stopHost(id string) {
	w.setDNS(id, nil)
	w.mu.Lock()
	wi := w.instances[id]
	wi.stopped = true
	w.mu.Unlock()
	if err := w.pool.Stop(id); err != nil {
		w.fail("instance %s: stopping its host: %v", id, err)
	}
}

func (w *watcher) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	w.logf("watcher: %s", msg)
	w.mu.Lock()
	w.errs = append(w.errs, msg)
	w.mu.Unlock()
}

func (w *watcher) errors() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.errs...)
}

// bootData is what the instance's cloud-init reads: its key pair's public
// key (the metadata service's public-keys) and its user data, decoded from
// base64.
func (w *watcher) bootData(ctx context.Context, region string, inst types.Instance) ([]string, []byte, error) {
	client := w.clients[region]
	var keys []string
	var errs []string
	if name := aws.ToString(inst.KeyName); name != "" {
		out, err := client.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{KeyNames: []string{name}, IncludePublicKey: aws.Bool(true)})
		found := false
		if err == nil {
			for _, kp := range out.KeyPairs {
				if k := strings.TrimSpace(aws.ToString(kp.PublicKey)); k != "" {
					keys = append(keys, k)
					found = true
				}
			}
		}
		if !found {
			if k, ok := w.proxy.ImportedKey(region, name); ok {
				keys = append(keys, k)
			} else {
				errs = append(errs, fmt.Sprintf("key pair %q: no public key in moto (%v) nor in an ImportKeyPair call", name, err))
			}
		}
	}
	var userData []byte
	out, err := client.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{
		InstanceId: inst.InstanceId, Attribute: types.InstanceAttributeNameUserData})
	if err != nil {
		errs = append(errs, fmt.Sprintf("reading its user data: %v", err))
	} else if out.UserData != nil && aws.ToString(out.UserData.Value) != "" {
		raw, err := base64.StdEncoding.DecodeString(aws.ToString(out.UserData.Value))
		if err != nil {
			errs = append(errs, fmt.Sprintf("its user data is not base64: %v", err))
		} else {
			userData = raw
		}
	}
	if len(errs) > 0 {
		return keys, userData, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return keys, userData, nil
}

// markRunning ends the instance's boot in moto (TestbedInstanceRunning, an
// action moto_launcher.py adds).
func (w *watcher) markRunning(ctx context.Context, region, id string) error {
	return testbedAction(ctx, w.motoURL, region, url.Values{"Action": {"TestbedInstanceRunning"}, "InstanceId": {id}}, "<state>running</state>")
}

// testbedAction sends one of the test bed's own actions (moto_launcher.py)
// straight to moto; moto reads the region from the credential scope and
// checks no signature. The answer must hold want.
func testbedAction(ctx context.Context, motoURL, region string, form url.Values, want string) error {
	form.Set("Version", "2016-11-15")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, motoURL+"/", strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=testing/20250101/"+region+"/ec2/aws4_request, SignedHeaders=host, Signature=0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
		return fmt.Errorf("moto answered %s: %s", resp.Status, body)
	}
	return nil
}

// endInstance stops or terminates the instance in moto with the state reason
// EC2 gives (TestbedEndInstance, moto_launcher.py patch 9), and the spot
// request status spotStatus when not empty.
func endInstance(ctx context.Context, motoURL, region, id, code string, stop bool, spotStatus string) error {
	behavior := "terminate"
	if stop {
		behavior = "stop"
	}
	form := url.Values{"Action": {"TestbedEndInstance"}, "InstanceId": {id}, "Code": {code}, "Behavior": {behavior}}
	if spotStatus != "" {
		form.Set("SpotStatus", spotStatus)
	}
	return testbedAction(ctx, motoURL, region, form, "<instanceId>"+id+"</instanceId>")
}
