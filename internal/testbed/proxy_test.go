package testbed

import (
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func proxyForTest(t *testing.T) (*Proxy, *int32) {
	var hits int32
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		atomic.AddInt32(&hits, 1)
		body, _ := io.ReadAll(r.Body)
		v, _ := url.ParseQuery(string(body))
		if v.Get("Action") == "TerminateInstances" {
			w.WriteHeader(400)
			io.WriteString(w, `<Response><Errors><Error><Code>InvalidInstanceID.NotFound</Code><Message>x</Message></Error></Errors></Response>`)
			return
		}
		io.WriteString(w, "<ok/>")
	}))
	t.Cleanup(backend.Close)
	p, err := newProxy(backend.URL, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, &hits
}

func post(t *testing.T, p *Proxy, form url.Values) (int, string, error) {
	req, _ := http.NewRequest(http.MethodPost, p.URL(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=testing/20261125/eu-west-1/ec2/aws4_request, SignedHeaders=host, Signature=0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func TestProxyRulesAndRecord(t *testing.T) {
	p, hits := proxyForTest(t)
	p.AddRule(Rule{Action: "CreateFleet", Nth: 2, ErrorCode: "InsufficientInstanceCapacity"})
	p.AddRule(Rule{Action: "DescribeRegions", ErrorCode: "RequestLimitExceeded"})
	form := url.Values{"Action": {"CreateFleet"}, "Version": {"2016-11-15"}, "Type": {"instant"}}
	var statuses []int
	for i := 0; i < 3; i++ {
		st, body, err := post(t, p, form)
		if err != nil {
			t.Fatal(err)
		}
		statuses = append(statuses, st)
		if i == 1 && (!strings.Contains(body, "<Errors><Error><Code>InsufficientInstanceCapacity</Code><Message>") || !strings.Contains(body, "<RequestID>")) {
			t.Errorf("error body %q", body)
		}
	}
	if statuses[0] != 200 || statuses[1] != 400 || statuses[2] != 200 || atomic.LoadInt32(hits) != 2 {
		t.Errorf("statuses %v, backend hits %d", statuses, *hits)
	}
	st, _, _ := post(t, p, url.Values{"Action": {"DescribeRegions"}})
	st2, _, _ := post(t, p, url.Values{"Action": {"DescribeRegions"}})
	if st != 503 || st2 != 503 {
		t.Errorf("Nth 0 rule: statuses %d %d, want 503 twice", st, st2)
	}
	post(t, p, url.Values{"Action": {"TerminateInstances"}, "InstanceId.1": {"i-1"}})
	calls := p.Calls()
	if len(calls) != 6 {
		t.Fatalf("%d calls", len(calls))
	}
	if c := calls[1]; c.Action != "CreateFleet" || !c.Injected || c.ErrorCode != "InsufficientInstanceCapacity" || c.Region != "eu-west-1" || c.Params["Type"] != "instant" || c.Seq != 2 {
		t.Errorf("call 2: %+v", c)
	}
	if c := calls[5]; c.ErrorCode != "InvalidInstanceID.NotFound" || c.Injected || c.Status != 400 || c.Params["InstanceId.1"] != "i-1" {
		t.Errorf("call 6: %+v", c)
	}
	if n := len(p.MutatingCalls()); n != 4 {
		t.Errorf("%d mutating calls, want 4", n)
	}
	if n := len(p.CallsOf("DescribeRegions")); n != 2 {
		t.Errorf("%d DescribeRegions calls", n)
	}
	p.ClearRules()
	if st, _, _ := post(t, p, url.Values{"Action": {"DescribeRegions"}}); st != 200 {
		t.Errorf("after ClearRules: %d", st)
	}
}

func TestProxyDropDelayAndImportedKey(t *testing.T) {
	p, hits := proxyForTest(t)
	p.AddRule(Rule{Action: "DeleteFleets", Nth: 1, Drop: true})
	p.AddRule(Rule{Action: "DescribeVpcs", Delay: 80 * time.Millisecond})
	if _, _, err := post(t, p, url.Values{"Action": {"DeleteFleets"}}); err == nil {
		t.Error("dropped call got an answer")
	}
	start := time.Now()
	if st, _, err := post(t, p, url.Values{"Action": {"DescribeVpcs"}}); err != nil || st != 200 || time.Since(start) < 80*time.Millisecond {
		t.Errorf("delayed call: %d %v after %s", st, err, time.Since(start))
	}
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI test"
	post(t, p, url.Values{"Action": {"ImportKeyPair"}, "KeyName": {"k1"}, "PublicKeyMaterial": {base64.StdEncoding.EncodeToString([]byte(key + "\n"))}})
	if got, ok := p.ImportedKey("eu-west-1", "k1"); !ok || got != key {
		t.Errorf("ImportedKey = %q, %v", got, ok)
	}
	if c := p.CallsOf("DeleteFleets"); len(c) != 1 || !c[0].Dropped || c[0].Status != 0 {
		t.Errorf("dropped call recorded as %+v", c)
	}
	if atomic.LoadInt32(hits) != 2 {
		t.Errorf("backend hits %d, want 2", *hits)
	}
}
