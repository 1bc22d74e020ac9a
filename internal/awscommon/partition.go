package awscommon

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// Partition is the AWS partition a region belongs to: "aws-cn" for the
// China regions (cn-*), "aws-us-gov" for GovCloud (us-gov-*), "aws-iso" and
// "aws-iso-b" for the isolated ones, else "aws".
func Partition(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	case strings.HasPrefix(region, "us-isob-"):
		return "aws-iso-b"
	case strings.HasPrefix(region, "us-iso-"):
		return "aws-iso"
	}
	return "aws"
}

// PartitionHomeRegion is the region whose endpoints answer for the whole
// partition (the global STS and IAM endpoints live there).
func PartitionHomeRegion(partition string) string {
	switch partition {
	case "aws-cn":
		return "cn-north-1"
	case "aws-us-gov":
		return "us-gov-west-1"
	case "aws-iso":
		return "us-iso-east-1"
	case "aws-iso-b":
		return "us-isob-east-1"
	}
	return "us-east-1"
}

var (
	kmsKeyID  = regexp.MustCompile(`^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$`)
	kmsAlias  = regexp.MustCompile(`^alias/[a-zA-Z0-9/_-]{1,250}$`)
	kmsKeyARN = regexp.MustCompile(`^arn:([a-z-]+):kms:([a-z0-9-]+):([0-9]{12}):(key/.+|alias/.+)$`)
)

// CheckKMSKeyID checks a KMS key reference EBS accepts for a volume in
// region: a key id, alias/name, or a key or alias ARN of the region's
// partition and of the region itself (EBS encrypts with a key of the
// volume's region).
func CheckKMSKeyID(ref, region string) error {
	if kmsKeyID.MatchString(ref) || kmsAlias.MatchString(ref) {
		return nil
	}
	m := kmsKeyARN.FindStringSubmatch(ref)
	if m == nil {
		return fmt.Errorf("%q is not a KMS key id, alias/name, or key or alias ARN; use a form such as \"1234abcd-12ab-34cd-56ef-1234567890ab\", \"alias/packer\" or \"arn:%s:kms:%s:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab\"", ref, Partition(region), region)
	}
	rest := m[4]
	if strings.HasPrefix(rest, "key/") && !kmsKeyID.MatchString(strings.TrimPrefix(rest, "key/")) {
		return fmt.Errorf("%q: %q is not a KMS key id; use the key ARN that `aws kms describe-key --key-id <alias>` prints", ref, strings.TrimPrefix(rest, "key/"))
	}
	if want := Partition(region); m[1] != want {
		return fmt.Errorf("%q is an ARN of partition %q, but region %s is in partition %q; use a key of that region (arn:%s:kms:%s:...)", ref, m[1], region, want, want, region)
	}
	if m[2] != region {
		return fmt.Errorf("%q is a key of region %s, but the volume is in %s; use a key of the volume's own region (for a multi-Region key, its replica in %s)", ref, m[2], region, region)
	}
	return nil
}

// CallerAccount asks STS in the home region of the region's partition whose
// credentials these are. It answers for valid credentials even when the
// region itself is not enabled for the account (EC2 there answers
// AuthFailure, as it does for wrong credentials). GetCallerIdentity needs
// no IAM permission.
func (c *AccessConfig) CallerAccount(ctx context.Context) (string, error) {
	cfg, err := c.AWSConfig(ctx)
	if err != nil {
		return "", err
	}
	home := PartitionHomeRegion(Partition(c.Region))
	out, err := sts.NewFromConfig(cfg, func(o *sts.Options) { o.Region = home }).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return "", err
	}
	return aws.ToString(out.Account), nil
}
