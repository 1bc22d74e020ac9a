package testbed

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// The watcher gives each host its instance's addresses and security groups
// (host_firewall.go) when the host is up, and again on every poll, so a
// changed rule or group applies within a poll interval.

// regionView is what one poll knows of a region's groups and instances.
type regionView struct {
	groups  map[string]types.SecurityGroup
	members map[string][]string // group id -> private addresses of its instances
}

// view reads the region's security groups, and the instances when not given.
func (w *watcher) view(ctx context.Context, region string, instances []types.Instance) (*regionView, error) {
	client := w.clients[region]
	if instances == nil {
		p := ec2.NewDescribeInstancesPaginator(client, &ec2.DescribeInstancesInput{})
		for p.HasMorePages() {
			out, err := p.NextPage(ctx)
			if err != nil {
				return nil, err
			}
			for _, r := range out.Reservations {
				instances = append(instances, r.Instances...)
			}
		}
	}
	v := &regionView{groups: map[string]types.SecurityGroup{}, members: map[string][]string{}}
	p := ec2.NewDescribeSecurityGroupsPaginator(client, &ec2.DescribeSecurityGroupsInput{})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, g := range out.SecurityGroups {
			v.groups[aws.ToString(g.GroupId)] = g
		}
	}
	for _, inst := range instances {
		if inst.State == nil || (inst.State.Name != types.InstanceStateNamePending && inst.State.Name != types.InstanceStateNameRunning) {
			continue
		}
		for _, g := range inst.SecurityGroups {
			if ip := aws.ToString(inst.PrivateIpAddress); ip != "" {
				v.members[aws.ToString(g.GroupId)] = append(v.members[aws.ToString(g.GroupId)], ip+"/32")
			}
		}
	}
	return v, nil
}

// cidrs is an instance's subnet CIDR, read once.
type cidrs struct{ subnet string }

func (w *watcher) cidrsOf(ctx context.Context, region string, inst types.Instance) (cidrs, error) {
	id := aws.ToString(inst.InstanceId)
	w.mu.Lock()
	c, ok := w.cidrCache[id]
	w.mu.Unlock()
	if ok {
		return c, nil
	}
	client := w.clients[region]
	sn, err := client.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{aws.ToString(inst.SubnetId)}})
	if err != nil || len(sn.Subnets) != 1 {
		return c, fmt.Errorf("its subnet %q: %v", aws.ToString(inst.SubnetId), err)
	}
	c = cidrs{subnet: aws.ToString(sn.Subnets[0].CidrBlock)}
	w.mu.Lock()
	w.cidrCache[id] = c
	w.mu.Unlock()
	return c, nil
}

// networkOf is the HostNetwork of an instance.
func (w *watcher) networkOf(ctx context.Context, region string, inst types.Instance, v *regionView) (HostNetwork, error) {
	c, err := w.cidrsOf(ctx, region, inst)
	if err != nil {
		return HostNetwork{}, err
	}
	caller, err := VPCCallerIP(c.subnet)
	if err != nil {
		return HostNetwork{}, err
	}
	if !inDefaultVPC(c.subnet) {
		caller = ""
	}
	n := HostNetwork{
		PrivateIP:      aws.ToString(inst.PrivateIpAddress),
		PublicIP:       aws.ToString(inst.PublicIpAddress),
		CallerPublicIP: w.callerIP,
		VPCCallerIP:    caller,
	}
	if n.PrivateIP == "" {
		return n, errors.New("it has no private address")
	}
	for _, ref := range inst.SecurityGroups {
		g, ok := v.groups[aws.ToString(ref.GroupId)]
		if !ok {
			return n, fmt.Errorf("its security group %s does not exist", aws.ToString(ref.GroupId))
		}
		for _, perm := range g.IpPermissions {
			r := SGRule{Protocol: aws.ToString(perm.IpProtocol), FromPort: -1, ToPort: -1}
			if perm.FromPort != nil {
				r.FromPort = int(*perm.FromPort)
			}
			if perm.ToPort != nil {
				r.ToPort = int(*perm.ToPort)
			}
			for _, rg := range perm.IpRanges {
				r.CIDRs = append(r.CIDRs, aws.ToString(rg.CidrIp))
			}
			for _, pair := range perm.UserIdGroupPairs {
				r.CIDRs = append(r.CIDRs, v.members[aws.ToString(pair.GroupId)]...)
			}
			n.Rules = append(n.Rules, r)
		}
	}
	return n, nil
}

// applyNetwork gives a started host its instance's network.
func (w *watcher) applyNetwork(ctx context.Context, region string, inst types.Instance, v *regionView) error {
	h, ok := w.pool.Host(aws.ToString(inst.InstanceId))
	if !ok {
		return nil
	}
	n, err := w.networkOf(ctx, region, inst, v)
	if err != nil {
		return err
	}
	return h.ApplyNetwork(ctx, n)
}

// refreshNetworks re-applies the groups of the region's running hosts.
func (w *watcher) refreshNetworks(ctx context.Context, region string, instances []types.Instance) {
	var running []types.Instance
	for _, inst := range instances {
		id := aws.ToString(inst.InstanceId)
		w.mu.Lock()
		wi, ok := w.instances[id]
		ready := ok && wi.started && wi.networked && !wi.stopped
		w.mu.Unlock()
		if ready && inst.State != nil && inst.State.Name == types.InstanceStateNameRunning {
			running = append(running, inst)
		}
	}
	if len(running) == 0 {
		return
	}
	v, err := w.view(ctx, region, instances)
	if err != nil {
		if ctx.Err() == nil {
			w.logf("watcher: %s: reading security groups: %v", region, err)
		}
		return
	}
	for _, inst := range running {
		if err := w.applyNetwork(ctx, region, inst, v); err != nil && ctx.Err() == nil {
			w.failOnce(aws.ToString(inst.InstanceId)+"/net", "%s: instance %s: applying its security groups: %v", region, aws.ToString(inst.InstanceId), err)
		}
	}
}

// failOnce records an error once per key (a poll repeats it).
func (w *watcher) failOnce(key, format string, args ...any) {
	w.mu.Lock()
	seen := w.failed[key]
	w.failed[key] = true
	w.mu.Unlock()
	if !seen {
		w.fail(format, args...)
	}
}

// The instances' DNS names (PublicDnsName, PrivateDnsName) resolve through
// a hosts file the test bed keeps (Testbed.HostsFile); the end-to-end harness
// mounts it over /etc/hosts for Packer, as AWS's DNS would answer them.

// setDNS adds or (with inst nil) removes an instance's names and rewrites
// the hosts file in place (a bind mount of it keeps seeing the new content).
func (w *watcher) setDNS(id string, inst *types.Instance) {
	if w.hostsPath == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if inst == nil {
		if _, ok := w.dns[id]; !ok {
			return
		}
		delete(w.dns, id)
	} else {
		var lines []string
		if ip, name := aws.ToString(inst.PublicIpAddress), aws.ToString(inst.PublicDnsName); ip != "" && name != "" {
			lines = append(lines, ip+" "+name)
		}
		if ip, name := aws.ToString(inst.PrivateIpAddress), aws.ToString(inst.PrivateDnsName); ip != "" && name != "" {
			lines = append(lines, ip+" "+name)
		}
		w.dns[id] = lines
	}
	if err := writeHostsFile(w.hostsPath, w.dns); err != nil {
		w.logf("watcher: writing %s: %v", w.hostsPath, err)
	}
}
