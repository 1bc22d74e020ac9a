package testbed

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// TestProxyClientTokens: a repeat of a client token gets the first answer and
// never reaches moto; other parameters with the same token are refused; a
// request without a token, or of an action without one, always passes.
func TestProxyClientTokens(t *testing.T) {
	p, hits := proxyForTest(t)
	fleet := url.Values{"Action": {"CreateFleet"}, "Version": {"2016-11-15"}, "Type": {"instant"}, "ClientToken": {"build-r1-a1"}}
	for i := range 3 {
		st, body, err := post(t, p, fleet)
		if err != nil || st != 200 || body != "<ok/>" {
			t.Fatalf("call %d: %d %q %v", i+1, st, body, err)
		}
	}
	if n := atomic.LoadInt32(hits); n != 1 {
		t.Errorf("moto saw %d CreateFleet calls with one client token, want 1", n)
	}
	if c := p.CallsOf("CreateFleet"); len(c) != 3 || c[0].Repeated || !c[1].Repeated || !c[2].Repeated {
		t.Errorf("calls %+v: want the first passed on, the others repeated", c)
	}
	other := url.Values{"Action": {"CreateFleet"}, "Version": {"2016-11-15"}, "Type": {"maintain"}, "ClientToken": {"build-r1-a1"}}
	if st, body, _ := post(t, p, other); st != 400 || !strings.Contains(body, "IdempotentParameterMismatch") {
		t.Errorf("same token, other parameters: %d %q", st, body)
	}
	post(t, p, url.Values{"Action": {"CreateSecurityGroup"}, "ClientToken": {"x"}, "GroupName": {"g"}})
	post(t, p, url.Values{"Action": {"CreateSecurityGroup"}, "ClientToken": {"x"}, "GroupName": {"g"}})
	post(t, p, url.Values{"Action": {"CreateFleet"}, "Type": {"instant"}})
	post(t, p, url.Values{"Action": {"CreateFleet"}, "Type": {"instant"}})
	if n := atomic.LoadInt32(hits); n != 5 {
		t.Errorf("moto saw %d calls, want 5 (no token, or an action without one, always passes)", n)
	}
}

// TestProxyNotEnabledRegion: EC2 calls to an opt-in region the account has
// not enabled get AuthFailure (401) and never reach moto; STS calls pass.
func TestProxyNotEnabledRegion(t *testing.T) {
	p, hits := proxyForTest(t)
	for _, c := range []struct {
		scope string
		want  int
	}{{"ap-east-1/ec2", 401}, {"us-east-1/sts", 200}, {"eu-west-1/ec2", 200}} {
		req, _ := http.NewRequest(http.MethodPost, p.URL(), strings.NewReader("Action=DescribeRegions&Version=2016-11-15"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=testing/20261125/"+c.scope+"/aws4_request, SignedHeaders=host, Signature=0")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want || (c.want == 401 && !strings.Contains(string(body), "<Code>AuthFailure</Code>")) {
			t.Errorf("%s: %d %s, want %d", c.scope, resp.StatusCode, body, c.want)
		}
	}
	if n := atomic.LoadInt32(hits); n != 2 {
		t.Errorf("moto saw %d calls, want 2", n)
	}
}
