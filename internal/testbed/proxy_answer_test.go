package testbed

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A dropped answer: moto got the call, the caller gets no answer.
func TestProxyDropAnswerPassesTheCallOn(t *testing.T) {
	p, hits := proxyForTest(t)
	p.AddRule(Rule{Action: "CreateFleet", DropAnswer: true})
	_, _, err := post(t, p, url.Values{"Action": {"CreateFleet"}})
	if err == nil {
		t.Fatal("the caller got an answer")
	}
	if n := atomic.LoadInt32(hits); n != 1 {
		t.Errorf("moto saw %d calls, want 1 (EC2 acts on the request)", n)
	}
	// The proxy records the call once the connection is closed, which the
	// caller may see first.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := p.CallsOf("CreateFleet")
		if len(c) == 1 && c[0].Dropped && c[0].Status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("record = %+v", c)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A caller that hangs up while the answer is held: moto got the call anyway.
func TestProxyAnswerDelaySurvivesTheCaller(t *testing.T) {
	p, hits := proxyForTest(t)
	p.AddRule(Rule{Action: "CreateFleet", AnswerDelay: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.URL(), strings.NewReader(url.Values{"Action": {"CreateFleet"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("the caller got an answer within 300 ms")
	}
	deadline := time.Now().Add(5 * time.Second)
	for atomic.LoadInt32(hits) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := atomic.LoadInt32(hits); n != 1 {
		t.Errorf("moto saw %d calls, want 1", n)
	}
}

// HasParam limits a rule to the calls carrying the parameter, and counts
// only those for Nth.
func TestProxyRuleHasParam(t *testing.T) {
	p, _ := proxyForTest(t)
	p.AddRule(Rule{Action: "DescribeInstances", HasParam: "InstanceId.1", Nth: 2, ErrorCode: "InternalError", HTTPStatus: 500})
	search := url.Values{"Action": {"DescribeInstances"}, "Filter.1.Name": {"tag-key"}}
	byID := url.Values{"Action": {"DescribeInstances"}, "InstanceId.1": {"i-1"}}
	for i, form := range []url.Values{search, byID, search, byID, byID} {
		status, _, err := post(t, p, form)
		if err != nil {
			t.Fatal(err)
		}
		want := 200
		if i == 3 {
			want = 500
		}
		if status != want {
			t.Errorf("call %d: status %d, want %d", i+1, status, want)
		}
	}
}

// After limits a rule to the calls made once a call of another action was
// recorded.
func TestProxyRuleAfter(t *testing.T) {
	p, _ := proxyForTest(t)
	p.AddRule(Rule{Action: "DescribeInstances", After: "CreateFleet", ErrorCode: "InternalError", HTTPStatus: 500})
	for i, action := range []string{"DescribeInstances", "CreateFleet", "DescribeInstances"} {
		status, _, err := post(t, p, url.Values{"Action": {action}})
		if err != nil {
			t.Fatal(err)
		}
		want := 200
		if i == 2 {
			want = 500
		}
		if status != want {
			t.Errorf("call %d (%s): status %d, want %d", i+1, action, status, want)
		}
	}
}
