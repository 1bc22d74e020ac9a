//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// TestHarnessLeakCheck: the end-of-test leak check startTestbed registers sees
// a resource left in moto, names it, and is quiet once it is gone.
func TestHarnessLeakCheck(t *testing.T) {
	tb := startTestbed(t, testbed.Options{})
	allowLeaks(t, "this test leaves a security group on purpose, then removes it")
	if p := leakProblem(tb); p != "" {
		t.Fatalf("a fresh test bed reports leaks:\n%s", p)
	}
	ctx := context.Background()
	c := tb.MotoClient(tb.Regions()[0])
	sg, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
		GroupName:   aws.String("harness-leak"),
		Description: aws.String("left on purpose"),
	})
	if err != nil {
		t.Fatalf("CreateSecurityGroup: %v", err)
	}
	p := leakProblem(tb)
	if !strings.Contains(p, aws.ToString(sg.GroupId)) || !strings.Contains(p, "harness-leak") {
		t.Errorf("leak check does not name the security group %s left behind:\n%s", aws.ToString(sg.GroupId), p)
	}
	if _, err := c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: sg.GroupId}); err != nil {
		t.Fatalf("DeleteSecurityGroup: %v", err)
	}
	if p := leakProblem(tb); p != "" {
		t.Errorf("leak check still reports leaks after the security group was deleted:\n%s", p)
	}
}
