package awscommon

import (
	"strings"
	"testing"
)

func TestPartition(t *testing.T) {
	for region, want := range map[string]string{
		"us-east-2": "aws", "eu-west-1": "aws", "cn-north-1": "aws-cn", "cn-northwest-1": "aws-cn",
		"us-gov-west-1": "aws-us-gov", "us-gov-east-1": "aws-us-gov", "us-iso-east-1": "aws-iso", "us-isob-east-1": "aws-iso-b",
	} {
		if got := Partition(region); got != want {
			t.Errorf("Partition(%s) = %s, want %s", region, got, want)
		}
	}
	if PartitionHomeRegion("aws-cn") != "cn-north-1" || PartitionHomeRegion("aws") != "us-east-1" || PartitionHomeRegion("aws-us-gov") != "us-gov-west-1" {
		t.Error("wrong home region")
	}
}

func TestCheckKMSKeyID(t *testing.T) {
	ok := map[string]string{
		"1234abcd-12ab-34cd-56ef-1234567890ab": "us-east-2",
		"mrk-1234abcd12ab34cd56ef1234567890ab": "us-east-2",
		"alias/packer":                         "us-east-2",
		"arn:aws:kms:us-east-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab":            "us-east-2",
		"arn:aws:kms:us-east-2:111122223333:alias/packer":                                        "us-east-2",
		"arn:aws-cn:kms:cn-north-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab":        "cn-north-1",
		"arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab": "us-gov-west-1",
	}
	for ref, region := range ok {
		if err := CheckKMSKeyID(ref, region); err != nil {
			t.Errorf("%s in %s: %v", ref, region, err)
		}
	}
	bad := []struct{ ref, region, want string }{
		{"packer", "us-east-2", "not a KMS key id"},
		{"arn:aws:kms:us-east-2:111122223333:key/nope", "us-east-2", "is not a KMS key id"},
		{"arn:aws:kms:cn-north-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", "cn-north-1", `partition "aws-cn"`},
		{"arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", "us-east-2", "the volume is in us-east-2"},
	}
	for _, b := range bad {
		err := CheckKMSKeyID(b.ref, b.region)
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%s in %s: %v, want %q", b.ref, b.region, err, b.want)
		}
	}
}
