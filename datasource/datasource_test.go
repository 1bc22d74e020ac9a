package datasource

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/debianami"
)

// isolateAWS keeps the AWS SDK away from the user's files, the instance
// metadata service and endpoint overrides in the environment.
func isolateAWS(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	for _, v := range []string{"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2",
		"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION"} {
		t.Setenv(v, "")
	}
}

func configure(t *testing.T, raw map[string]interface{}) (*Datasource, error) {
	t.Helper()
	d := &Datasource{}
	return d, d.Configure(raw)
}

func TestConfigureDefaults(t *testing.T) {
	d, err := configure(t, map[string]interface{}{"region": "us-east-2"})
	if err != nil {
		t.Fatal(err)
	}
	c := d.config
	if !reflect.DeepEqual(c.Owners, []string{"136693071363"}) {
		t.Errorf("owners = %v, want Debian's account", c.Owners)
	}
	if c.release != (debianami.Release{Number: 13, Codename: "trixie"}) {
		t.Errorf("release = %v, want trixie", c.release)
	}
	if c.arch != "arm64" {
		t.Errorf("architecture = %q, want arm64", c.arch)
	}
	if c.IncludeDeprecated {
		t.Error("include_deprecated defaults to true")
	}
	if c.MaxRetries != 10 {
		t.Errorf("max_retries = %d, want 10", c.MaxRetries)
	}
	q := d.query()
	if q.Region != "us-east-2" || q.Release.Codename != "trixie" || q.Architecture != "arm64" || q.IncludeDeprecated {
		t.Errorf("query = %+v", q)
	}
}

func TestConfigureValues(t *testing.T) {
	d, err := configure(t, map[string]interface{}{
		"region":             "eu-west-1",
		"release":            "12",
		"architecture":       "x86_64",
		"include_deprecated": true,
		"owners":             []string{"111122223333", "amazon"},
		"filters":            map[string]string{"virtualization-type": "hvm"},
	})
	if err != nil {
		t.Fatal(err)
	}
	q := d.query()
	want := debianami.Query{
		Release:           debianami.Release{Number: 12, Codename: "bookworm"},
		Architecture:      "amd64",
		Owners:            []string{"111122223333", "amazon"},
		Filters:           map[string]string{"virtualization-type": "hvm"},
		IncludeDeprecated: true,
		Region:            "eu-west-1",
	}
	if !reflect.DeepEqual(q, want) {
		t.Errorf("query = %+v\nwant %+v", q, want)
	}
}

func TestConfigureErrors(t *testing.T) {
	noSDKRegion(t)
	for _, tc := range []struct {
		name string
		raw  map[string]interface{}
		want []string
	}{
		{"empty region", map[string]interface{}{}, []string{"region: required", `region = "us-east-2"`}},
		{"blank region", map[string]interface{}{"region": ""}, []string{"region: required"}},
		{"bad region", map[string]interface{}{"region": "us-east-2a"}, []string{`region: "us-east-2a" is not an AWS region name`}},
		{"unknown release", map[string]interface{}{"region": "us-east-2", "release": "stretch"},
			[]string{`release: unknown Debian release "stretch"; use one of`, `"bookworm" (12)`, `"trixie" (13)`}},
		{"unknown architecture", map[string]interface{}{"region": "us-east-2", "architecture": "i386"},
			[]string{`architecture: unknown architecture "i386"; use "arm64" or "amd64"`}},
		{"bad owner", map[string]interface{}{"region": "us-east-2", "owners": []string{"debian"}},
			[]string{`owners: "debian" is not an AWS account id`}},
		{"China without owners", map[string]interface{}{"region": "cn-north-1"},
			[]string{"owners: required in region cn-north-1", "partition aws-cn", "136693071363 in partition aws"}},
		{"GovCloud without owners", map[string]interface{}{"region": "us-gov-west-1"},
			[]string{"owners: required in region us-gov-west-1", "partition aws-us-gov"}},
		{"empty filter name", map[string]interface{}{"region": "us-east-2", "filters": map[string]string{"": "x"}},
			[]string{"filters: a filter name is empty"}},
		{"several at once", map[string]interface{}{"release": "sid", "architecture": "sparc"},
			[]string{"region: required", `unknown Debian release "sid"`, `unknown architecture "sparc"`}},
		{"unknown option", map[string]interface{}{"region": "us-east-2", "relase": "12"}, []string{"relase"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := configure(t, tc.raw)
			if err == nil {
				t.Fatal("Configure accepted it")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// fakeEC2Server answers EC2 Query API calls with canned XML and records them.
type fakeEC2Server struct {
	*httptest.Server
	mu       sync.Mutex
	requests []url.Values
	status   int
	body     string
}

func newFakeEC2(t *testing.T, status int, body string) *fakeEC2Server {
	f := &fakeEC2Server{status: status, body: body}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		form, err := url.ParseQuery(string(b))
		if err != nil {
			t.Errorf("bad request body %q", b)
		}
		f.mu.Lock()
		f.requests = append(f.requests, form)
		f.mu.Unlock()
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(f.status)
		fmt.Fprint(w, f.body)
	}))
	t.Cleanup(f.Close)
	return f
}

func imageXML(id, name, created, deprecation string) string {
	dep := ""
	if deprecation != "" {
		dep = "<deprecationTime>" + deprecation + "</deprecationTime>"
	}
	return `<item><imageId>` + id + `</imageId><imageState>available</imageState>
<imageOwnerId>136693071363</imageOwnerId><creationDate>` + created + `</creationDate>
<architecture>arm64</architecture><imageType>machine</imageType><name>` + name + `</name>
<description>Debian 13 (20251117-2299)</description><rootDeviceName>/dev/xvda</rootDeviceName>
<bootMode>uefi</bootMode>` + dep + `</item>`
}

func describeImagesXML(items ...string) string {
	return `<?xml version="1.0" encoding="UTF-8"?>
<DescribeImagesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
<requestId>r-1</requestId><imagesSet>` + strings.Join(items, "") + `</imagesSet></DescribeImagesResponse>`
}

func TestExecute(t *testing.T) {
	isolateAWS(t)
	srv := newFakeEC2(t, 200, describeImagesXML(
		imageXML("ami-0older", "debian-13-arm64-20251001-2250", "2025-10-01T10:00:00.000Z", ""),
		imageXML("ami-0newest", "debian-13-arm64-20251117-2299", "2025-11-17T10:05:06.000Z", "2027-11-17T10:05:06.000Z"),
		imageXML("ami-0dep", "debian-13-arm64-20251201-2300", "2025-12-01T10:00:00.000Z", "2025-12-02T00:00:00.000Z"),
	))
	d, err := configure(t, map[string]interface{}{
		"region": "us-east-2", "ec2_endpoint": srv.URL, "access_key": "testing", "secret_key": "testing",
		"max_retries": 1, "filters": map[string]string{"virtualization-type": "hvm"},
	})
	if err != nil {
		t.Fatal(err)
	}
	v, err := d.Execute()
	if err != nil {
		t.Fatal(err)
	}
	if !v.Type().Equals(hcldec.ImpliedType(d.OutputSpec())) {
		t.Errorf("output type %#v does not match OutputSpec", v.Type())
	}
	want := map[string]string{
		"id":               "ami-0newest",
		"name":             "debian-13-arm64-20251117-2299",
		"creation_date":    "2025-11-17T10:05:06Z",
		"description":      "Debian 13 (20251117-2299)",
		"architecture":     "arm64",
		"owner":            "136693071363",
		"release":          "trixie",
		"root_device_name": "/dev/xvda",
		"boot_mode":        "uefi",
		"deprecation_time": "2027-11-17T10:05:06Z",
	}
	for k, w := range want {
		got := v.GetAttr(k)
		if got.Type() != cty.String || got.AsString() != w {
			t.Errorf("%s = %#v, want %q", k, got, w)
		}
	}

	if len(srv.requests) != 1 {
		t.Fatalf("%d requests, want 1", len(srv.requests))
	}
	r := srv.requests[0]
	if r.Get("Action") != "DescribeImages" || r.Get("Owner.1") != "136693071363" || r.Get("IncludeDeprecated") != "true" {
		t.Errorf("request = %v", r)
	}
	filters := map[string]string{}
	for i := 1; r.Get(fmt.Sprintf("Filter.%d.Name", i)) != ""; i++ {
		filters[r.Get(fmt.Sprintf("Filter.%d.Name", i))] = r.Get(fmt.Sprintf("Filter.%d.Value.1", i))
	}
	wantFilters := map[string]string{"name": "debian-13-arm64-*", "architecture": "arm64", "state": "available",
		"image-type": "machine", "virtualization-type": "hvm"}
	if !reflect.DeepEqual(filters, wantFilters) {
		t.Errorf("filters = %v, want %v", filters, wantFilters)
	}
}

func TestExecuteNoDeprecationTime(t *testing.T) {
	isolateAWS(t)
	srv := newFakeEC2(t, 200, describeImagesXML(imageXML("ami-1", "debian-13-arm64-20251117-2299", "2025-11-17T10:05:06.000Z", "")))
	d, err := configure(t, map[string]interface{}{"region": "us-east-2", "ec2_endpoint": srv.URL, "access_key": "a", "secret_key": "b"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := d.Execute()
	if err != nil {
		t.Fatal(err)
	}
	if got := v.GetAttr("deprecation_time"); got.IsNull() || got.AsString() != "" {
		t.Errorf("deprecation_time = %#v, want \"\"", got)
	}
}

func TestExecuteErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   []string
	}{
		{
			name:   "no match",
			status: 200,
			body:   describeImagesXML(),
			want: []string{"nixos-sd-debian-ami: no Debian 13 (trixie) arm64 AMI owned by 136693071363 in region us-east-2 matches",
				"include_deprecated = true"},
		},
		{
			name:   "only deprecated",
			status: 200,
			body:   describeImagesXML(imageXML("ami-dep", "debian-13-arm64-20251201-2300", "2025-12-01T10:00:00.000Z", "2025-12-02T00:00:00.000Z")),
			want:   []string{"1 deprecated", "set include_deprecated = true"},
		},
		{
			name:   "AWS error",
			status: 401,
			body: `<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>AuthFailure</Code>` +
				`<Message>AWS was not able to validate the provided access credentials</Message></Error></Errors><RequestID>r-2</RequestID></Response>`,
			want: []string{"nixos-sd-debian-ami: DescribeImages in us-east-2 failed: AuthFailure: AWS was not able to validate the provided access credentials",
				"check your credentials"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			isolateAWS(t)
			srv := newFakeEC2(t, tc.status, tc.body)
			d, err := configure(t, map[string]interface{}{"region": "us-east-2", "ec2_endpoint": srv.URL,
				"access_key": "a", "secret_key": "b", "max_retries": 1})
			if err != nil {
				t.Fatal(err)
			}
			v, err := d.Execute()
			if err == nil {
				t.Fatalf("Execute returned %#v, want an error", v)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// noSDKRegion hides the machine's AWS settings, which would give a region
// the configuration lacks.
func noSDKRegion(t *testing.T) {
	t.Helper()
	for _, v := range []string{"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"} {
		t.Setenv(v, "")
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
}
