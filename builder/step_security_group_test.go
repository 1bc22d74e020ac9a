package builder

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	osexec "os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

func publicIPServer(t *testing.T, answer string) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprint(w, answer)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func ingress(t *testing.T, f *fakeEC2) types.IpPermission {
	t.Helper()
	in := inputsOf[*ec2.AuthorizeSecurityGroupIngressInput](f, "AuthorizeSecurityGroupIngress")
	if len(in) != 1 || len(in[0].IpPermissions) != 1 {
		t.Fatalf("ingress calls = %+v", in)
	}
	return in[0].IpPermissions[0]
}

func TestSecurityGroupFromPublicIP(t *testing.T) {
	srv, hits := publicIPServer(t, "  203.0.113.45\n")
	f := newFakeEC2()
	cfg := testConfig(t, map[string]interface{}{"public_ip_url": srv.URL, "tags": map[string]string{"Project": "pi"}})
	cfg.SSHSourceCIDRs = nil
	state, _ := testState(cfg, f)
	state.Put(stateVpcID, "vpc-0123456789abcdef0")
	if action := (&stepSecurityGroup{}).Run(context.Background(), state); action != multistep.ActionContinue {
		t.Fatalf("halted: %v", stateErr(state))
	}
	if hits.Load() != 1 {
		t.Errorf("public IP server hits = %d", hits.Load())
	}
	p := ingress(t, f)
	if aws.ToString(p.IpProtocol) != "tcp" || aws.ToInt32(p.FromPort) != 22 || aws.ToInt32(p.ToPort) != 22 {
		t.Errorf("permission = %+v", p)
	}
	if len(p.IpRanges) != 1 || aws.ToString(p.IpRanges[0].CidrIp) != "203.0.113.45/32" {
		t.Errorf("ranges = %+v, want only 203.0.113.45/32", p.IpRanges)
	}
	cs := inputsOf[*ec2.CreateSecurityGroupInput](f, "CreateSecurityGroup")[0]
	if aws.ToString(cs.VpcId) != "vpc-0123456789abcdef0" {
		t.Errorf("VPC = %s, want the one stepNetwork chose", aws.ToString(cs.VpcId))
	}
	tags := map[string]string{}
	for _, tg := range cs.TagSpecifications[0].Tags {
		tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
	}
	if cs.TagSpecifications[0].ResourceType != types.ResourceTypeSecurityGroup || tags[BuildIDTag] != "0190b1a2-test-build-id" || tags["Project"] != "pi" {
		t.Errorf("tags = %v", cs.TagSpecifications)
	}
	if getString(state, stateSecurityGroupID) != "sg-0123456789abcdef0" {
		t.Error("group not recorded")
	}
}

func TestSecurityGroupHonoursSourceCIDRsAndPort(t *testing.T) {
	srv, hits := publicIPServer(t, "203.0.113.45")
	f := newFakeEC2()
	cfg := testConfig(t, map[string]interface{}{
		"public_ip_url":    srv.URL,
		"ssh_source_cidrs": []string{"192.0.2.0/24", "2001:db8::/32"},
		"ssh_port":         2222,
		"subnet_id":        "subnet-bbbbbbbb",
	})
	state, _ := testState(cfg, f)
	state.Put(stateVpcID, "vpc-0123456789abcdef0")
	if action := (&stepSecurityGroup{}).Run(context.Background(), state); action != multistep.ActionContinue {
		t.Fatalf("halted: %v", stateErr(state))
	}
	if hits.Load() != 0 {
		t.Error("asked for the public IP although ssh_source_cidrs was given")
	}
	p := ingress(t, f)
	if aws.ToInt32(p.FromPort) != 2222 || len(p.IpRanges) != 1 || aws.ToString(p.IpRanges[0].CidrIp) != "192.0.2.0/24" ||
		len(p.Ipv6Ranges) != 1 || aws.ToString(p.Ipv6Ranges[0].CidrIpv6) != "2001:db8::/32" {
		t.Errorf("permission = %+v", p)
	}
}

func TestSecurityGroupPublicIPFailures(t *testing.T) {
	for name, answer := range map[string]string{
		"not an address": "<html>hello</html>",
		"ipv6":           "2001:db8::1",
	} {
		t.Run(name, func(t *testing.T) {
			srv, _ := publicIPServer(t, answer)
			f := newFakeEC2()
			cfg := testConfig(t, map[string]interface{}{"public_ip_url": srv.URL})
			cfg.SSHSourceCIDRs = nil
			state, _ := testState(cfg, f)
			state.Put(stateVpcID, "vpc-0123456789abcdef0")
			if action := (&stepSecurityGroup{}).Run(context.Background(), state); action != multistep.ActionHalt {
				t.Fatal("passed")
			}
			if msg := stateErr(state).Error(); !strings.Contains(msg, "set ssh_source_cidrs") {
				t.Errorf("error %q does not say to set ssh_source_cidrs", msg)
			}
			if f.count("CreateSecurityGroup") != 0 {
				t.Error("created a group without knowing whom to let in")
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		srv, _ := publicIPServer(t, "")
		url := srv.URL
		srv.Close()
		cfg := testConfig(t, map[string]interface{}{"public_ip_url": url})
		cfg.SSHSourceCIDRs = nil
		state, _ := testState(cfg, newFakeEC2())
		state.Put(stateVpcID, "vpc-0123456789abcdef0")
		if (&stepSecurityGroup{}).Run(context.Background(), state) != multistep.ActionHalt {
			t.Fatal("passed")
		}
		if !strings.Contains(stateErr(state).Error(), "set ssh_source_cidrs") {
			t.Errorf("error = %v", stateErr(state))
		}
	})
}

func TestCleanupReportsLeftovers(t *testing.T) {
	f := newFakeEC2()
	f.deleteSGErrs = make([]error, 100000)
	for i := range f.deleteSGErrs {
		f.deleteSGErrs[i] = apiErr("DependencyViolation", "in use")
	}
	cfg := testConfig(t, map[string]interface{}{"state_timeout": "20ms"})
	state, ui := testState(cfg, f)
	state.Put(stateSecurityGroupID, "sg-0123456789abcdef0")
	(&stepSecurityGroup{}).Cleanup(state)
	if out := ui.String(); !strings.Contains(out, "sg-0123456789abcdef0") || !strings.Contains(out, "by hand") {
		t.Errorf("the user is not told which group to delete:\n%s", out)
	}
}

// With ssh_interface private_ip or private_dns and no ssh_source_cidrs, SSH
// comes from inside the VPC: the group admits the VPC, not this machine's
// public address (which AWS never sees on such a connection).
func TestSecurityGroupPrivateInterfaceAdmitsTheVPC(t *testing.T) {
	for _, iface := range []string{"private_ip", "private_dns"} {
		srv, hits := publicIPServer(t, "203.0.113.45")
		f := newFakeEC2()
		cfg := testConfig(t, map[string]interface{}{"public_ip_url": srv.URL, "ssh_interface": iface})
		cfg.SSHSourceCIDRs = nil
		state, _ := testState(cfg, f)
		state.Put(stateVpcID, "vpc-0123456789abcdef0")
		if action := (&stepSecurityGroup{}).Run(context.Background(), state); action != multistep.ActionContinue {
			t.Fatalf("%s: halted: %v", iface, stateErr(state))
		}
		p := ingress(t, f)
		if len(p.IpRanges) != 1 || aws.ToString(p.IpRanges[0].CidrIp) != "172.31.0.0/16" {
			t.Errorf("%s: ranges = %+v, want the VPC 172.31.0.0/16", iface, p.IpRanges)
		}
		if hits.Load() != 0 {
			t.Errorf("%s: asked for the public address, which a connection from inside the VPC does not show", iface)
		}
	}
}

// TestSecurityGroupDuplicateOfOwnLostRequest: CreateSecurityGroup takes no
// client token, so the SDK's retry of a request whose answer was lost gets
// InvalidGroup.Duplicate; the group carrying this build's id is this build's
// and is used, one of another build is not.
func TestSecurityGroupDuplicateOfOwnLostRequest(t *testing.T) {
	for _, c := range []struct {
		owner string
		ok    bool
	}{{"0190b1a2-test-build-id", true}, {"another-build", false}} {
		f := newFakeEC2()
		f.createSGErr = &smithy.GenericAPIError{Code: "InvalidGroup.Duplicate", Message: "The security group already exists"}
		f.groups = []types.SecurityGroup{{GroupId: aws.String("sg-0lost0000000000"), Tags: []types.Tag{{Key: aws.String(BuildIDTag), Value: aws.String(c.owner)}}}}
		cfg := testConfig(t, map[string]interface{}{"ssh_source_cidrs": []string{"192.0.2.0/24"}})
		state, _ := testState(cfg, f)
		state.Put(stateVpcID, "vpc-0123456789abcdef0")
		action := (&stepSecurityGroup{}).Run(context.Background(), state)
		if !c.ok {
			if action != multistep.ActionHalt || !strings.Contains(stateErr(state).Error(), "is not this build's") {
				t.Errorf("another build's group: %v", stateErr(state))
			}
			continue
		}
		if action != multistep.ActionContinue || getString(state, stateSecurityGroupID) != "sg-0lost0000000000" {
			t.Fatalf("own group not adopted: %v", stateErr(state))
		}
		if in := inputsOf[*ec2.AuthorizeSecurityGroupIngressInput](f, "AuthorizeSecurityGroupIngress"); len(in) != 1 || aws.ToString(in[0].GroupId) != "sg-0lost0000000000" {
			t.Errorf("ingress %v, want one on the adopted group", in)
		}
	}
}

// TestPublicIPIgnoresProxy: the public address look-up goes straight to
// public_ip_url even with HTTP_PROXY and HTTPS_PROXY set, since the proxy's
// address is not the one AWS sees. net/http reads the proxy variables once
// per process and never proxies loopback hosts, so the look-up runs in a
// child process started with them set, against a host name the test's
// dialer maps to a local server.
func TestPublicIPIgnoresProxy(t *testing.T) {
	if target := os.Getenv("NIXOS_SD_PUBLIC_IP_CHILD"); target != "" {
		client := publicIPClient()
		tr := client.Transport.(*http.Transport)
		if tr.Proxy != nil {
			if u, _ := tr.Proxy(httptest.NewRequest(http.MethodGet, "http://checkip.invalid/", nil)); u != nil {
				t.Logf("the transport would send the request to proxy %s", u)
			}
		}
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr == "checkip.invalid:80" {
				addr = target
			}
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}
		ip, err := (&stepSecurityGroup{httpClient: client}).publicIP(context.Background(), "http://checkip.invalid/")
		if err != nil || ip != "203.0.113.45" {
			t.Fatalf("public address = %q, %v; want 203.0.113.45 from public_ip_url itself", ip, err)
		}
		return
	}
	direct, directHits := publicIPServer(t, "203.0.113.45")
	proxy, proxyHits := publicIPServer(t, "198.51.100.99")
	cmd := osexec.Command(os.Args[0], "-test.run=^TestPublicIPIgnoresProxy$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(),
		"NIXOS_SD_PUBLIC_IP_CHILD="+strings.TrimPrefix(direct.URL, "http://"),
		"HTTP_PROXY="+proxy.URL, "HTTPS_PROXY="+proxy.URL, "http_proxy="+proxy.URL, "https_proxy="+proxy.URL,
		"NO_PROXY=", "no_proxy=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the look-up in a process with HTTP(S)_PROXY set failed: %v\n%s", err, out)
	}
	if proxyHits.Load() != 0 || directHits.Load() != 1 {
		t.Errorf("proxy hits = %d, public_ip_url hits = %d; want 0 and 1", proxyHits.Load(), directHits.Load())
	}
}

// TestRouteWarning: with ssh_interface private_ip the group admits the VPC
// only, so an address outside the VPC from which this machine reaches it
// (VPN, peering) gets a warning naming ssh_source_cidrs. The kernel's own
// source address choice is used: toward 127.0.0.2 it is 127.0.0.1.
func TestRouteWarning(t *testing.T) {
	ctx := context.Background()
	if w := routeWarning(ctx, "vpc-1", "private_ip", []string{"127.0.0.0/8"}); w != "" {
		t.Errorf("this machine inside the VPC: warned %q", w)
	}
	w := routeWarning(ctx, "vpc-1", "private_ip", []string{"2001:db8::/56", "127.0.0.2/32"})
	for _, want := range []string{"vpc-1", "127.0.0.1", "127.0.0.2/32", "ssh_source_cidrs", `"127.0.0.1/32"`} {
		if !strings.Contains(w, want) {
			t.Errorf("this machine outside the VPC: warning %q lacks %q", w, want)
		}
	}
	if w := routeWarning(ctx, "vpc-1", "private_ip", []string{"2001:db8::/56"}); w != "" {
		t.Errorf("no IPv4 block: warned %q", w)
	}
	for p, want := range map[string]string{"10.0.0.0/16": "10.0.0.1", "10.0.0.4/31": "10.0.0.4", "10.0.0.9/32": "10.0.0.9"} {
		if got := probeAddr(netip.MustParsePrefix(p)); got.String() != want {
			t.Errorf("probeAddr(%s) = %s, want %s", p, got, want)
		}
	}
}

// The step warns at the start, before anything is launched, and only when
// SSH goes from this machine to the private address.
func TestSecurityGroupPrivateInterfaceOutsideVPCWarns(t *testing.T) {
	for _, c := range []struct {
		name, cidr string
		extra      map[string]interface{}
		warn       bool
	}{
		{"outside", "127.0.0.2/32", nil, true},
		{"inside", "127.0.0.0/8", nil, false},
		{"bastion", "127.0.0.2/32", map[string]interface{}{"ssh_bastion_host": "192.0.2.9", "ssh_bastion_agent_auth": true}, false},
	} {
		f := newFakeEC2()
		f.vpcCIDR = c.cidr
		extra := map[string]interface{}{"ssh_interface": "private_ip"}
		for k, v := range c.extra {
			extra[k] = v
		}
		cfg := testConfig(t, extra)
		cfg.SSHSourceCIDRs = nil
		state, ui := testState(cfg, f)
		state.Put(stateVpcID, "vpc-0123456789abcdef0")
		if action := (&stepSecurityGroup{}).Run(context.Background(), state); action != multistep.ActionContinue {
			t.Fatalf("%s: halted: %v", c.name, stateErr(state))
		}
		if got := strings.Contains(ui.String(), "set ssh_source_cidrs"); got != c.warn {
			t.Errorf("%s: warned = %v, want %v:\n%s", c.name, got, c.warn, ui.String())
		}
	}
}
