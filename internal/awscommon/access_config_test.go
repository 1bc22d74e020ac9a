package awscommon

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

func valid() AccessConfig { return AccessConfig{Region: "us-east-2"} }

func TestPrepareDefaults(t *testing.T) {
	c := valid()
	if errs := c.Prepare(); len(errs) != 0 {
		t.Fatalf("Prepare: %v", errs)
	}
	if c.MaxRetries != 10 {
		t.Errorf("max_retries = %d, want 10", c.MaxRetries)
	}
	if c.AssumeRole.SessionName != "packer-nixos-sd" {
		t.Errorf("assume_role.session_name = %q", c.AssumeRole.SessionName)
	}
	if c.assumeRoleDuration != time.Hour {
		t.Errorf("assume_role.duration = %v, want 1h", c.assumeRoleDuration)
	}
}

func TestPrepareAccepts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*AccessConfig)
		check func(*testing.T, *AccessConfig)
	}{
		{"other region names", func(c *AccessConfig) { c.Region = "ap-southeast-2" }, nil},
		{"gov region", func(c *AccessConfig) { c.Region = "us-gov-west-1" }, nil},
		{"static keys", func(c *AccessConfig) { c.AccessKey, c.SecretKey, c.Token = "AKIA", "secret", "tok" }, nil},
		{"endpoint", func(c *AccessConfig) { c.EC2Endpoint = "http://127.0.0.1:5000" }, nil},
		{"explicit retries", func(c *AccessConfig) { c.MaxRetries = 3 }, func(t *testing.T, c *AccessConfig) {
			if c.MaxRetries != 3 {
				t.Errorf("max_retries = %d", c.MaxRetries)
			}
		}},
		{"assume role", func(c *AccessConfig) {
			c.AssumeRole = AssumeRoleConfig{RoleARN: "arn:aws:iam::123456789012:role/x", ExternalID: "e", Duration: "15m"}
		}, func(t *testing.T, c *AccessConfig) {
			if c.assumeRoleDuration != 15*time.Minute {
				t.Errorf("assume_role.duration = %v", c.assumeRoleDuration)
			}
		}},
		{"assume role 12h", func(c *AccessConfig) {
			c.AssumeRole = AssumeRoleConfig{RoleARN: "arn:aws:iam::123456789012:role/x", Duration: "12h"}
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.edit(&c)
			if errs := c.Prepare(); len(errs) != 0 {
				t.Fatalf("Prepare: %v", errs)
			}
			if tc.check != nil {
				tc.check(t, &c)
			}
		})
	}
}

func TestPrepareRejects(t *testing.T) {
	noSDKRegion(t)
	for _, tc := range []struct {
		name string
		edit func(*AccessConfig)
		want string // the option named, and what to do
	}{
		{"missing region", func(c *AccessConfig) { c.Region = "" }, `region: required, and the AWS SDK's configuration gives none (no AWS_REGION or AWS_DEFAULT_REGION, no region in the profile's section of ~/.aws/config); set it to the AWS region to build in, for example region = "us-east-2"`},
		{"availability zone", func(c *AccessConfig) { c.Region = "us-east-2a" }, `region: "us-east-2a" is not an AWS region name`},
		{"display name", func(c *AccessConfig) { c.Region = "US East (Ohio)" }, `region: "US East (Ohio)" is not an AWS region name`},
		{"upper case", func(c *AccessConfig) { c.Region = "US-EAST-2" }, `region: "US-EAST-2" is not an AWS region name`},
		{"access key alone", func(c *AccessConfig) { c.AccessKey = "AKIA" }, "access_key and secret_key: set both or neither"},
		{"secret key alone", func(c *AccessConfig) { c.SecretKey = "s" }, "access_key and secret_key: set both or neither"},
		{"token alone", func(c *AccessConfig) { c.Token = "t" }, "token: only meaningful with access_key and secret_key"},
		{"endpoint without scheme", func(c *AccessConfig) { c.EC2Endpoint = "ec2.us-east-2.amazonaws.com" }, `ec2_endpoint: "ec2.us-east-2.amazonaws.com" is not an http(s) URL`},
		{"endpoint other scheme", func(c *AccessConfig) { c.EC2Endpoint = "ftp://host" }, `ec2_endpoint: "ftp://host" is not an http(s) URL`},
		{"endpoint without host", func(c *AccessConfig) { c.EC2Endpoint = "http://" }, `ec2_endpoint: "http://" is not an http(s) URL`},
		{"endpoint unparsable", func(c *AccessConfig) { c.EC2Endpoint = "http://[::1" }, `ec2_endpoint: "http://[::1" is not an http(s) URL`},
		{"negative retries", func(c *AccessConfig) { c.MaxRetries = -1 }, "max_retries: must be 0 or more, got -1"},
		{"session name without role", func(c *AccessConfig) { c.AssumeRole.SessionName = "s" }, "assume_role.role_arn: required when assume_role is given"},
		{"external id without role", func(c *AccessConfig) { c.AssumeRole.ExternalID = "e" }, "assume_role.role_arn: required when assume_role is given"},
		{"duration without role", func(c *AccessConfig) { c.AssumeRole.Duration = "1h" }, "assume_role.role_arn: required when assume_role is given"},
		{"role duration too short", func(c *AccessConfig) {
			c.AssumeRole = AssumeRoleConfig{RoleARN: "arn:aws:iam::123456789012:role/x", Duration: "14m"}
		}, "assume_role.duration: 14m0s is outside what AWS accepts; use 15m to 12h"},
		{"role duration too long", func(c *AccessConfig) {
			c.AssumeRole = AssumeRoleConfig{RoleARN: "arn:aws:iam::123456789012:role/x", Duration: "13h"}
		}, "assume_role.duration: 13h0m0s is outside what AWS accepts; use 15m to 12h"},
		{"role duration not a duration", func(c *AccessConfig) {
			c.AssumeRole = AssumeRoleConfig{RoleARN: "arn:aws:iam::123456789012:role/x", Duration: "1 hour"}
		}, `assume_role.duration: "1 hour" is not a positive duration`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.edit(&c)
			errs := c.Prepare()
			if len(errs) != 1 {
				t.Fatalf("Prepare returned %d errors, want 1: %v", len(errs), errs)
			}
			if !strings.Contains(errs[0].Error(), tc.want) {
				t.Errorf("error %q lacks %q", errs[0], tc.want)
			}
		})
	}
}

func TestPrepareReportsEveryError(t *testing.T) {
	c := AccessConfig{AccessKey: "a", EC2Endpoint: "nope"}
	errs := c.Prepare()
	var all []string
	for _, e := range errs {
		all = append(all, e.Error())
	}
	joined := strings.Join(all, "\n")
	for _, opt := range []string{"region:", "access_key and secret_key:", "ec2_endpoint:"} {
		if !strings.Contains(joined, opt) {
			t.Errorf("errors lack %s:\n%s", opt, joined)
		}
	}
}

// isolateAWS keeps the AWS SDK away from the user's files, the instance
// metadata service and endpoint overrides in the environment.
func isolateAWS(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	for _, v := range []string{"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2",
		"AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
		"AWS_REGION", "AWS_DEFAULT_REGION"} {
		t.Setenv(v, "")
	}
}

// ec2Recorder is an EC2 endpoint that records the actions it receives and
// answers DescribeRegions.
type ec2Recorder struct {
	*httptest.Server
	mu      sync.Mutex
	actions []string
	auth    []string
}

func newEC2Recorder(t *testing.T) *ec2Recorder {
	r := &ec2Recorder{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		form, _ := url.ParseQuery(string(b))
		r.mu.Lock()
		r.actions = append(r.actions, form.Get("Action"))
		r.auth = append(r.auth, req.Header.Get("Authorization"))
		r.mu.Unlock()
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?>
<DescribeRegionsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r-1</requestId>
<regionInfo><item><regionName>us-east-2</regionName><regionEndpoint>ec2.us-east-2.amazonaws.com</regionEndpoint></item></regionInfo>
</DescribeRegionsResponse>`)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *ec2Recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.actions...)
}

func describeRegions(t *testing.T, c AccessConfig) {
	t.Helper()
	if errs := c.Prepare(); len(errs) != 0 {
		t.Fatal(errs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := c.NewEC2Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out, err := client.DescribeRegions(ctx, &ec2.DescribeRegionsInput{})
	if err != nil {
		t.Fatalf("DescribeRegions: %v", err)
	}
	if len(out.Regions) != 1 || aws.ToString(out.Regions[0].RegionName) != "us-east-2" {
		t.Errorf("DescribeRegions = %+v", out.Regions)
	}
}

func TestNewEC2ClientHonoursEC2Endpoint(t *testing.T) {
	isolateAWS(t)
	option := newEC2Recorder(t)
	env := newEC2Recorder(t)
	// The option wins over the environment.
	t.Setenv("AWS_ENDPOINT_URL_EC2", env.URL)
	describeRegions(t, AccessConfig{Region: "us-east-2", EC2Endpoint: option.URL, AccessKey: "AKIDTEST", SecretKey: "s"})
	if got := option.got(); len(got) != 1 || got[0] != "DescribeRegions" {
		t.Errorf("ec2_endpoint received %v, want one DescribeRegions", got)
	}
	if got := env.got(); len(got) != 0 {
		t.Errorf("AWS_ENDPOINT_URL_EC2 received %v although ec2_endpoint is set", got)
	}
	// Signed with the static keys for the configured region.
	if a := option.auth[0]; !strings.Contains(a, "Credential=AKIDTEST/") || !strings.Contains(a, "/us-east-2/ec2/") {
		t.Errorf("Authorization = %q", a)
	}
}

func TestNewEC2ClientHonoursEnvironmentEndpoint(t *testing.T) {
	isolateAWS(t)
	env := newEC2Recorder(t)
	t.Setenv("AWS_ENDPOINT_URL_EC2", env.URL)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s")
	describeRegions(t, AccessConfig{Region: "us-east-2"})
	if got := env.got(); len(got) != 1 || got[0] != "DescribeRegions" {
		t.Errorf("AWS_ENDPOINT_URL_EC2 received %v, want one DescribeRegions", got)
	}
	// Credentials come from the environment when no keys are configured.
	if a := env.auth[0]; !strings.Contains(a, "Credential=AKIDENV/") {
		t.Errorf("Authorization = %q", a)
	}
}

// noSDKRegion hides the machine's AWS settings from the test.
func noSDKRegion(t *testing.T) {
	t.Helper()
	for _, v := range []string{"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"} {
		t.Setenv(v, "")
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
}

// TestPrepareRegionFromSDK: without region, the AWS SDK's own setting is
// used, as the AWS CLI finds it, and where it came from is kept.
func TestPrepareRegionFromSDK(t *testing.T) {
	prep := func(c AccessConfig) (AccessConfig, []error) {
		errs := c.Prepare()
		return c, errs
	}
	noSDKRegion(t)
	t.Setenv("AWS_DEFAULT_REGION", "eu-west-1")
	if c, errs := prep(AccessConfig{}); len(errs) > 0 || c.Region != "eu-west-1" || c.RegionSource() != "AWS_DEFAULT_REGION" {
		t.Errorf("AWS_DEFAULT_REGION: region %q from %q, %v", c.Region, c.RegionSource(), errs)
	}
	t.Setenv("AWS_REGION", "eu-central-1")
	if c, errs := prep(AccessConfig{}); len(errs) > 0 || c.Region != "eu-central-1" || c.RegionSource() != "AWS_REGION" {
		t.Errorf("AWS_REGION: region %q from %q, %v", c.Region, c.RegionSource(), errs)
	}
	if c, errs := prep(AccessConfig{Region: "us-west-2"}); len(errs) > 0 || c.Region != "us-west-2" || c.RegionSource() != "" {
		t.Errorf("region set: region %q from %q, %v", c.Region, c.RegionSource(), errs)
	}

	noSDKRegion(t)
	conf := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(conf, []byte("[default]\nregion = ap-south-1\n\n[profile pi]\nregion = sa-east-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_CONFIG_FILE", conf)
	if c, errs := prep(AccessConfig{}); len(errs) > 0 || c.Region != "ap-south-1" || c.RegionSource() != "profile default in the AWS config file" {
		t.Errorf("default profile: region %q from %q, %v", c.Region, c.RegionSource(), errs)
	}
	if c, errs := prep(AccessConfig{Profile: "pi"}); len(errs) > 0 || c.Region != "sa-east-1" || c.RegionSource() != "profile pi in the AWS config file" {
		t.Errorf("profile pi: region %q from %q, %v", c.Region, c.RegionSource(), errs)
	}
	t.Setenv("AWS_PROFILE", "pi")
	if c, errs := prep(AccessConfig{}); len(errs) > 0 || c.Region != "sa-east-1" {
		t.Errorf("AWS_PROFILE=pi: region %q, %v", c.Region, errs)
	}
	if _, errs := prep(AccessConfig{Profile: "missing"}); len(errs) == 0 || !strings.HasPrefix(errs[0].Error(), "region: not set, and the AWS SDK's configuration could not be read") {
		t.Errorf("a missing profile: %v", errs)
	}
}
