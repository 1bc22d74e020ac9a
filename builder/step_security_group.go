package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/retry"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/awscommon"
)

// publicIPTimeout bounds the public address look-up.
const publicIPTimeout = 10 * time.Second

// stepSecurityGroup creates the temporary security group: SSH only, only
// from ssh_source_cidrs or this machine's public IPv4 as a /32. It never
// opens SSH to the whole internet by default.
type stepSecurityGroup struct {
	// httpClient fetches public_ip_url; nil means publicIPClient.
	httpClient *http.Client
}

func (s *stepSecurityGroup) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	clockOf(state).enter(phaseLaunch)
	e, err := env(state)
	if err != nil {
		return halt(state, err)
	}
	cfg := e.cfg
	buildID := getString(state, stateBuildID)

	vpcID := getString(state, stateVpcID)
	if vpcID == "" {
		return halt(state, errors.New("internal error: no VPC in the build state"))
	}

	cidrs := cfg.SSHSourceCIDRs
	switch {
	case len(cidrs) > 0:
	case cfg.SSHInterface == "private_ip" || cfg.SSHInterface == "private_dns":
		// A connection to the private address comes from inside the VPC (this
		// machine, a bastion, a VPN): AWS judges it on that VPC address, never
		// on this machine's public one.
		cidrs, err = vpcCIDRs(ctx, e, vpcID)
		if err != nil {
			return halt(state, err)
		}
		e.ui.Say(fmt.Sprintf("SSH will be allowed from the VPC %s (%s), as ssh_interface = %q connects from inside it", vpcID, strings.Join(cidrs, ", "), cfg.SSHInterface))
		if cfg.Comm.SSHBastionHost == "" && cfg.Comm.SSHProxyHost == "" && cfg.UserSSHHost() == "" {
			if w := routeWarning(ctx, vpcID, cfg.SSHInterface, cidrs); w != "" {
				e.ui.Say(w)
			}
		}
	default:
		ip, err := s.publicIP(ctx, cfg.PublicIPURL)
		if err != nil {
			return halt(state, err)
		}
		cidrs = []string{ip + "/32"}
		e.ui.Say(fmt.Sprintf("SSH will be allowed from this machine's public address %s", cidrs[0]))
	}
	state.Put(stateSSHCIDRs, cidrs)
	port := cfg.Comm.SSHPort
	if port == 0 {
		port = 22
	}

	name := fmt.Sprintf("%s-%s", resourceName(cfg), shortID(buildID))
	e.ui.Say(fmt.Sprintf("Creating temporary security group %s in %s...", name, vpcID))
	out, err := e.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
		GroupName:         aws.String(name),
		Description:       aws.String("Temporary SSH access for packer-nixos-sd build " + buildID),
		VpcId:             aws.String(vpcID),
		TagSpecifications: []types.TagSpecification{tagSpec(types.ResourceTypeSecurityGroup, resourceTags(cfg, state, nil))},
	})
	var groupID string
	switch {
	case awscommon.ErrorCode(err) == "InvalidGroup.Duplicate":
		// CreateSecurityGroup takes no client token: the SDK's retry of a
		// request whose answer was lost finds the group the first one made.
		groupID, err = ownGroup(ctx, e, vpcID, name, buildID)
		if err != nil {
			return halt(state, fmt.Errorf("creating the temporary security group %s in %s: %w", name, vpcID, err))
		}
	case err != nil:
		return halt(state, fmt.Errorf("creating the temporary security group in %s: %w", vpcID, err))
	default:
		groupID = aws.ToString(out.GroupId)
	}
	state.Put(stateSecurityGroupID, groupID)

	perm := types.IpPermission{
		IpProtocol: aws.String("tcp"),
		FromPort:   aws.Int32(int32(port)),
		ToPort:     aws.Int32(int32(port)),
	}
	for _, c := range cidrs {
		desc := aws.String("packer-nixos-sd SSH")
		if strings.Contains(c, ":") {
			perm.Ipv6Ranges = append(perm.Ipv6Ranges, types.Ipv6Range{CidrIpv6: aws.String(c), Description: desc})
		} else {
			perm.IpRanges = append(perm.IpRanges, types.IpRange{CidrIp: aws.String(c), Description: desc})
		}
	}
	// The group was created a moment ago: NotFound means not visible yet.
	if _, err := e.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{
		GroupId:       aws.String(groupID),
		IpPermissions: []types.IpPermission{perm},
	}, awscommon.NotYetVisible(cfg.PollIntervalDuration(), awscommon.CodeGroupNotFound)); err != nil {
		return halt(state, fmt.Errorf("allowing SSH (tcp %d from %s) in security group %s: %w", port, strings.Join(cidrs, ", "), groupID, err))
	}
	return multistep.ActionContinue
}

// ownGroup is the id of the group named name in the VPC when this build
// created it (its build id tag says so): what a CreateSecurityGroup whose
// answer was lost made before the SDK's retry answered InvalidGroup.Duplicate.
func ownGroup(ctx context.Context, e stepEnv, vpcID, name, buildID string) (string, error) {
	out, err := e.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{
		{Name: aws.String("vpc-id"), Values: []string{vpcID}},
		{Name: aws.String("group-name"), Values: []string{name}},
	}})
	if err != nil {
		return "", fmt.Errorf("a group of that name exists and looking it up failed: %w; delete it if no build uses it", err)
	}
	for _, g := range out.SecurityGroups {
		if tagValue(g.Tags, BuildIDTag) == buildID {
			return aws.ToString(g.GroupId), nil
		}
	}
	return "", fmt.Errorf("a group of that name exists and is not this build's (tag %s); delete it or run the build again", BuildIDTag)
}

// vpcCIDRs are the VPC's associated IPv4 CIDR blocks.
func vpcCIDRs(ctx context.Context, e stepEnv, vpcID string) ([]string, error) {
	out, err := e.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{vpcID}})
	if err != nil {
		return nil, fmt.Errorf("reading the CIDR blocks of VPC %s (the default ssh_source_cidrs of a private ssh_interface): %w; set ssh_source_cidrs to the addresses SSH will come from", vpcID, err)
	}
	var cidrs []string
	for _, v := range out.Vpcs {
		for _, a := range v.CidrBlockAssociationSet {
			if a.CidrBlockState == nil || a.CidrBlockState.State == types.VpcCidrBlockStateCodeAssociated {
				cidrs = append(cidrs, aws.ToString(a.CidrBlock))
			}
		}
		if len(cidrs) == 0 && aws.ToString(v.CidrBlock) != "" {
			cidrs = append(cidrs, aws.ToString(v.CidrBlock))
		}
	}
	if len(cidrs) == 0 {
		return nil, fmt.Errorf("VPC %s has no IPv4 CIDR block; set ssh_source_cidrs to the addresses SSH will come from", vpcID)
	}
	return cidrs, nil
}

// routeWarning warns when this machine reaches the VPC from an address
// outside its CIDR blocks (a VPN, peering or transit gateway route): the
// group, admitting only the VPC, then lets nothing in. The address is the
// one the kernel picks as source toward the VPC; finding it sends no packet.
func routeWarning(ctx context.Context, vpcID, iface string, cidrs []string) string {
	var prefixes []netip.Prefix
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil && p.Addr().Is4() {
			prefixes = append(prefixes, p.Masked())
		}
	}
	if len(prefixes) == 0 {
		return ""
	}
	local, err := sourceAddrToward(ctx, probeAddr(prefixes[0]))
	if err != nil {
		return fmt.Sprintf("Warning: ssh_interface = %q, and this machine has no route to VPC %s (%v): so SSH to the instance's private address will time out; connect through ssh_bastion_host, or add a route to the VPC and set ssh_source_cidrs to the address SSH comes from", iface, vpcID, err)
	}
	for _, p := range prefixes {
		if p.Contains(local) {
			return ""
		}
	}
	return fmt.Sprintf("Warning: ssh_interface = %q, and this machine reaches VPC %s from %s, outside its CIDR blocks (%s), as over a VPN, peering or transit gateway; the security group admits only the VPC, so unless that route translates addresses into the VPC SSH will time out: set ssh_source_cidrs to the address the instance sees (for example [\"%s/32\"])", iface, vpcID, local, strings.Join(cidrs, ", "), local)
}

// probeAddr is an address inside p: its first host address.
func probeAddr(p netip.Prefix) netip.Addr {
	a := p.Addr()
	if p.Bits() < a.BitLen()-1 {
		a = a.Next()
	}
	return a
}

// sourceAddrToward is the local address the kernel picks for traffic to
// dst. Connecting a UDP socket chooses the route and sends nothing.
func sourceAddrToward(ctx context.Context, dst netip.Addr) (netip.Addr, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", netip.AddrPortFrom(dst, 22).String())
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	ua, ok := c.LocalAddr().(*net.UDPAddr)
	if !ok {
		return netip.Addr{}, fmt.Errorf("unexpected local address %v", c.LocalAddr())
	}
	return ua.AddrPort().Addr().Unmap(), nil
}

// publicIPClient asks public_ip_url directly, never through HTTP_PROXY or
// HTTPS_PROXY: a proxy's address is not the one AWS sees SSH come from.
func publicIPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	return &http.Client{Transport: t, Timeout: publicIPTimeout}
}

// publicIP asks url for this machine's public IPv4 address.
func (s *stepSecurityGroup) publicIP(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, publicIPTimeout)
	defer cancel()
	fail := func(what string) (string, error) {
		return "", fmt.Errorf("finding this machine's public IPv4 address from %s (asked directly, never through a proxy): %s; set ssh_source_cidrs to the address SSH will come from (for example [\"203.0.113.7/32\"]) or public_ip_url to a service that answers it", url, what)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fail(err.Error())
	}
	client := s.httpClient
	if client == nil {
		client = publicIPClient()
	}
	resp, err := client.Do(req)
	if err != nil {
		return fail(err.Error())
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fail("HTTP status " + resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256))
	if err != nil {
		return fail(err.Error())
	}
	text := strings.TrimSpace(string(body))
	ip := net.ParseIP(text)
	if ip == nil || ip.To4() == nil || strings.Contains(text, ":") {
		return fail(fmt.Sprintf("the answer %q is not an IPv4 address", text))
	}
	return ip.To4().String(), nil
}

func (s *stepSecurityGroup) Cleanup(state multistep.StateBag) {
	clockOf(state).enter(phaseCleanup)
	cleanupResource(state, stateSecurityGroupID, "security group", deleteSecurityGroup)
}

// deleteSecurityGroup deletes the group, retrying while a terminating
// instance still holds it (DependencyViolation), up to state_timeout. The SDK
// retries NotFound (not visible yet); NotFound still after its tries means
// the group is gone (a delete whose answer was lost).
func deleteSecurityGroup(ctx context.Context, e stepEnv, groupID string) error {
	inUse := func(err error) bool {
		code := awscommon.ErrorCode(err)
		return code == "DependencyViolation" || code == "InvalidGroup.InUse"
	}
	delay := pollBackoff(e.cfg)
	err := retry.Config{
		StartTimeout: e.cfg.StateTimeoutDuration(),
		RetryDelay:   delay.Linear,
		ShouldRetry:  inUse,
	}.Run(ctx, func(ctx context.Context) error {
		_, err := e.ec2.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(groupID)},
			awscommon.NotYetVisible(e.cfg.PollIntervalDuration(), awscommon.CodeGroupNotFound))
		if awscommon.ErrorCode(err) == awscommon.CodeGroupNotFound {
			return nil
		}
		return err
	})
	if inUse(err) {
		return fmt.Errorf("still in use after %s: %w", e.cfg.StateTimeoutDuration(), err)
	}
	return err
}

func shortID(id string) string {
	id = strings.ReplaceAll(id, "-", "")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
