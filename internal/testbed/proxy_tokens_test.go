package testbed

import (
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
