package testbed

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// fakeEC2 answers CreateFleet with one instance (none when the capacity is
// 0), CreateSecurityGroup with a group id, and anything else with an empty
// answer; it keeps the forms it got.
type fakeEC2 struct {
	mu    sync.Mutex
	forms []url.Values
}

func (f *fakeEC2) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	v, _ := url.ParseQuery(string(body))
	f.mu.Lock()
	f.forms = append(f.forms, v)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	switch v.Get("Action") {
	case "CreateFleet":
		inst := ""
		if v.Get("TargetCapacitySpecification.TotalTargetCapacity") != "0" {
			inst = `<item><instanceIds><item>i-0123456789abcdef0</item></instanceIds><instanceType>` + v.Get("LaunchTemplateConfigs.1.Overrides.1.InstanceType") +
				`</instanceType><lifecycle>spot</lifecycle></item>`
		}
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><CreateFleetResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><fleetId>fleet-0123456789abcdef0</fleetId><fleetInstanceSet>`+inst+`</fleetInstanceSet></CreateFleetResponse>`)
	case "CreateSecurityGroup":
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><CreateSecurityGroupResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><return>true</return><groupId>sg-0123456789abcdef0</groupId></CreateSecurityGroupResponse>`)
	default:
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><return>true</return></Response>`)
	}
}

func (f *fakeEC2) last() url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.forms[len(f.forms)-1]
}

func sdkThroughProxy(t *testing.T) (*ec2.Client, *Proxy, *fakeEC2) {
	t.Helper()
	fake := &fakeEC2{}
	backend := httptest.NewServer(fake)
	t.Cleanup(backend.Close)
	p, err := newProxy(backend.URL, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	c := newEC2Client("us-east-2", p.URL())
	return c, p, fake
}

func threePoolFleet() *ec2.CreateFleetInput {
	return &ec2.CreateFleetInput{
		Type: types.FleetTypeInstant,
		TargetCapacitySpecification: &types.TargetCapacitySpecificationRequest{
			TotalTargetCapacity: aws.Int32(1), SpotTargetCapacity: aws.Int32(1), DefaultTargetCapacityType: types.DefaultTargetCapacityTypeSpot,
		},
		LaunchTemplateConfigs: []types.FleetLaunchTemplateConfigRequest{{
			LaunchTemplateSpecification: &types.FleetLaunchTemplateSpecificationRequest{LaunchTemplateId: aws.String("lt-0123456789abcdef0"), Version: aws.String("$Latest")},
			Overrides: []types.FleetLaunchTemplateOverridesRequest{
				{InstanceType: "c7g.2xlarge", SubnetId: aws.String("subnet-aaaaaaaaaaaaaaaa1")},
				{InstanceType: "m7g.2xlarge", SubnetId: aws.String("subnet-aaaaaaaaaaaaaaaa1")},
				{InstanceType: "c7g.2xlarge", SubnetId: aws.String("subnet-bbbbbbbbbbbbbbbb2")},
			},
		}},
	}
}

// Some pools fail: HTTP 200, their errors with their overrides, and the
// instance from a pool that worked; moto is asked only for that pool.
func TestProxyPoolErrorsSomePoolsFail(t *testing.T) {
	c, p, fake := sdkThroughProxy(t)
	p.AddRule(Rule{Action: "CreateFleet", PoolErrors: []PoolError{
		{SubnetID: "subnet-aaaaaaaaaaaaaaaa1", InstanceType: "c7g.2xlarge", ErrorCode: "InsufficientInstanceCapacity"},
		{InstanceType: "m7g.2xlarge", ErrorCode: "Unsupported"},
	}})
	out, err := c.CreateFleet(context.Background(), threePoolFleet())
	if err != nil {
		t.Fatalf("CreateFleet: %v; want HTTP 200 with per-pool errors", err)
	}
	if len(out.Instances) != 1 || out.Instances[0].InstanceIds[0] != "i-0123456789abcdef0" || out.Instances[0].InstanceType != "c7g.2xlarge" {
		t.Errorf("instances %+v, want the one of the pool that did not fail", out.Instances)
	}
	if len(out.Errors) != 2 {
		t.Fatalf("errors %+v, want 2", out.Errors)
	}
	want := []struct{ code, itype, subnet string }{
		{"InsufficientInstanceCapacity", "c7g.2xlarge", "subnet-aaaaaaaaaaaaaaaa1"},
		{"Unsupported", "m7g.2xlarge", "subnet-aaaaaaaaaaaaaaaa1"},
	}
	for i, w := range want {
		e := out.Errors[i]
		lo := e.LaunchTemplateAndOverrides
		if aws.ToString(e.ErrorCode) != w.code || lo == nil || lo.Overrides == nil || string(lo.Overrides.InstanceType) != w.itype ||
			aws.ToString(lo.Overrides.SubnetId) != w.subnet || aws.ToString(lo.LaunchTemplateSpecification.LaunchTemplateId) != "lt-0123456789abcdef0" ||
			e.Lifecycle != types.InstanceLifecycleSpot || aws.ToString(e.ErrorMessage) == "" {
			t.Errorf("error %d = %+v (overrides %+v), want %s for %s in %s", i, e, lo, w.code, w.itype, w.subnet)
		}
	}
	got := fake.last()
	if got.Get("LaunchTemplateConfigs.1.Overrides.1.SubnetId") != "subnet-bbbbbbbbbbbbbbbb2" || got.Has("LaunchTemplateConfigs.1.Overrides.2.InstanceType") {
		t.Errorf("moto got overrides %v, want only the pool that did not fail", got)
	}
	if calls := p.CallsOf("CreateFleet"); len(calls) != 1 || calls[0].Status != 200 || !calls[0].Injected || calls[0].ErrorCode != "InsufficientInstanceCapacity" {
		t.Errorf("record %+v", calls)
	}
}

// Every pool fails: still HTTP 200 and a fleet id, no instance.
func TestProxyPoolErrorsEveryPoolFails(t *testing.T) {
	c, p, fake := sdkThroughProxy(t)
	p.AddRule(Rule{Action: "CreateFleet", Nth: 1, PoolErrors: []PoolError{{ErrorCode: "VcpuLimitExceeded"}}})
	out, err := c.CreateFleet(context.Background(), threePoolFleet())
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Instances) != 0 || len(out.Errors) != 3 || aws.ToString(out.FleetId) == "" {
		t.Fatalf("answer %+v, want a fleet id, 3 errors, no instance", out)
	}
	for _, e := range out.Errors {
		if aws.ToString(e.ErrorCode) != "VcpuLimitExceeded" {
			t.Errorf("error %+v", e)
		}
	}
	if got := fake.last(); got.Get("TargetCapacitySpecification.TotalTargetCapacity") != "0" || got.Get("TargetCapacitySpecification.SpotTargetCapacity") != "0" {
		t.Errorf("moto got capacity %v, want 0", got)
	}
	// Nth 1: the next call is untouched.
	out, err = c.CreateFleet(context.Background(), threePoolFleet())
	if err != nil || len(out.Errors) != 0 || len(out.Instances) != 1 {
		t.Errorf("second CreateFleet: %+v %v, want moto's answer unchanged", out, err)
	}
}

// A just-created group answers InvalidGroup.NotFound to the next calls
// naming it, then is visible.
func TestProxyNotFoundAfterCreate(t *testing.T) {
	c, p, _ := sdkThroughProxy(t)
	p.AddRule(Rule{Action: "CreateSecurityGroup", NotFoundCalls: 2})
	ctx := context.Background()
	sg, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("g"), Description: aws.String("d")})
	if err != nil || aws.ToString(sg.GroupId) != "sg-0123456789abcdef0" {
		t.Fatalf("CreateSecurityGroup: %+v %v", sg, err)
	}
	in := &ec2.AuthorizeSecurityGroupIngressInput{GroupId: sg.GroupId, IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22), CidrIp: aws.String("198.51.100.7/32")}
	c2 := ec2.NewFromConfig(aws.Config{Region: "us-east-2", Credentials: c.Options().Credentials, RetryMaxAttempts: 1},
		func(o *ec2.Options) { o.BaseEndpoint = aws.String(p.URL()) })
	for i := 0; i < 2; i++ {
		_, err := c2.AuthorizeSecurityGroupIngress(ctx, in)
		var ae smithy.APIError
		if !errors.As(err, &ae) || ae.ErrorCode() != "InvalidGroup.NotFound" {
			t.Fatalf("call %d naming the new group: %v, want InvalidGroup.NotFound", i+1, err)
		}
	}
	if _, err := c2.AuthorizeSecurityGroupIngress(ctx, in); err != nil {
		t.Fatalf("third call: %v, want the group visible", err)
	}
	if n := p.NotFoundAnswers("sg-0123456789abcdef0"); n != 2 {
		t.Errorf("NotFoundAnswers = %d, want 2", n)
	}
	// The next test's record starts empty.
	p.ClearRules()
	if h := p.Hidden(); len(h) != 0 {
		t.Errorf("after ClearRules the proxy still lists %v as hidden", h)
	}
}

// NotFoundFor hides a fleet's instance for a time.
func TestProxyNotFoundForAWhile(t *testing.T) {
	c, p, _ := sdkThroughProxy(t)
	p.AddRule(Rule{Action: "CreateFleet", NotFoundFor: 300 * time.Millisecond})
	ctx := context.Background()
	if _, err := c.CreateFleet(ctx, threePoolFleet()); err != nil {
		t.Fatal(err)
	}
	c2 := ec2.NewFromConfig(aws.Config{Region: "us-east-2", Credentials: c.Options().Credentials, RetryMaxAttempts: 1},
		func(o *ec2.Options) { o.BaseEndpoint = aws.String(p.URL()) })
	in := &ec2.DescribeInstancesInput{InstanceIds: []string{"i-0123456789abcdef0"}}
	_, err := c2.DescribeInstances(ctx, in)
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "InvalidInstanceID.NotFound" {
		t.Fatalf("DescribeInstances right after CreateFleet: %v, want InvalidInstanceID.NotFound", err)
	}
	// Unrelated calls are not affected.
	if _, err := c2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{}); err != nil {
		t.Errorf("DescribeInstances without ids: %v", err)
	}
	time.Sleep(350 * time.Millisecond)
	if _, err := c2.DescribeInstances(ctx, in); err != nil {
		t.Errorf("DescribeInstances after 350 ms: %v, want visible", err)
	}
}
