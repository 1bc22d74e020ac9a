package testbed

import (
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Rule is a fault the proxy injects into EC2 calls.
type Rule struct {
	// Action is the EC2 action it applies to (e.g. "CreateFleet"); empty = any.
	Action string
	// HasParam, when set, limits the rule to calls carrying that parameter
	// (e.g. "InstanceId.1": a DescribeInstances by id, not a search).
	HasParam string
	// After, when set, limits the rule to calls made once a call of that
	// action was recorded (e.g. the waits after "TerminateInstances").
	After string
	// Nth is the 1-based number of the matching call, counted from when the
	// rule was added, that it applies to; 0 = every matching call.
	Nth int
	// ErrorCode, when set, answers with an EC2 error of that code instead of
	// passing the call to moto (e.g. "InsufficientInstanceCapacity").
	ErrorCode string
	// Message is the error's message; empty = a note that the proxy injected it.
	Message string
	// HTTPStatus of the error answer; 0 = 400, or 503 for RequestLimitExceeded,
	// Unavailable, InternalError and ServiceUnavailable.
	HTTPStatus int
	// Delay holds the call this long before answering (or dropping, or passing on).
	Delay time.Duration
	// Drop closes the connection without any answer.
	Drop bool
	// AnswerDelay and DropAnswer pass the call to moto at once, whatever
	// the caller does meanwhile (EC2 acts on a request it received), then
	// hold its answer AnswerDelay (or until the caller goes away) or drop
	// it: a request whose answer never arrives (proxy_answer.go).
	AnswerDelay time.Duration
	DropAnswer  bool
	// PoolErrors, on CreateFleet (type instant), fail the pools they match
	// as EC2 does: HTTP 200 with an Errors entry per failed pool and the
	// instance from a pool that did not fail (proxy_fleet.go).
	PoolErrors []PoolError
	// NotFoundCalls and NotFoundFor, on RunInstances, CreateFleet,
	// CreateSecurityGroup or CreateLaunchTemplate, let the call through and
	// then answer *.NotFound to the next NotFoundCalls calls naming what it
	// created, or to every such call for NotFoundFor: EC2's eventual
	// consistency (proxy_consistency.go).
	NotFoundCalls int
	NotFoundFor   time.Duration
}

// Call is one EC2 API call the proxy saw.
type Call struct {
	Seq    int // 1-based, in arrival order
	Time   time.Time
	Region string // from the request's SigV4 credential scope
	// Service is the SigV4 credential scope's service ("ec2", "sts", ...).
	Service string
	Action  string
	// UserAgent is the request's User-Agent; the test bed's own clients
	// (Testbed.EC2Client) carry TestbedAppID in it.
	UserAgent string
	// Params holds the request's query parameters except Action and Version,
	// flattened as EC2 sends them ("Owner.1", "Filter.1.Name", ...).
	Params map[string]string
	// Status is the HTTP status answered (0 when dropped).
	Status int
	// ErrorCode is the EC2 error code answered, by a rule or by moto.
	ErrorCode string
	Injected  bool // a Rule answered, delayed or dropped it
	// Repeated: the call repeated an earlier call's client token and got its
	// answer; moto never saw it (proxy_tokens.go).
	Repeated bool
	Dropped  bool
	Duration time.Duration
}

// Mutating says whether the call is anything but Describe*/Get*.
func (c Call) Mutating() bool {
	return !strings.HasPrefix(c.Action, "Describe") && !strings.HasPrefix(c.Action, "Get")
}

type ruleState struct {
	Rule
	seen int
}

// Proxy is the fault proxy in front of moto: it records every EC2 call and
// applies Rules.
type Proxy struct {
	target *url.URL
	rp     *httputil.ReverseProxy
	srv    *http.Server
	ln     net.Listener
	logf   func(string, ...any)

	mu      sync.Mutex
	calls   []Call
	rules   []*ruleState
	keys    map[string]string // region/keyName -> public key seen in ImportKeyPair
	hidden  []*hidden         // just-created resources not visible yet
	tokens  tokenCache        // first answers per client token
	reqSeq  int
	reqBase string
	lastMut time.Time
	// mutated gets a signal after each mutating call moto answered, so the
	// watcher looks at the instances at once.
	mutated chan struct{}
}

func newProxy(target string, logf func(string, ...any)) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fault proxy: %w", err)
	}
	p := &Proxy{target: u, ln: ln, logf: logf, keys: map[string]string{}, mutated: make(chan struct{}, 1), reqBase: fmt.Sprintf("%08x", time.Now().UnixNano()&0xffffffff)}
	p.rp = httputil.NewSingleHostReverseProxy(u)
	p.rp.ErrorLog = nil
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 30 * time.Second}
	go p.srv.Serve(ln)
	return p, nil
}

// URL is where clients send EC2 calls.
func (p *Proxy) URL() string { return "http://" + p.ln.Addr().String() }

// Close stops the proxy.
func (p *Proxy) Close() error { return p.srv.Close() }

// AddRule adds a fault rule.
func (p *Proxy) AddRule(r Rule) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append(p.rules, &ruleState{Rule: r})
}

// ClearRules removes every fault rule and makes visible what rules hid.
func (p *Proxy) ClearRules() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = nil
	p.hidden = nil
}

// Calls returns every call so far, in order.
func (p *Proxy) Calls() []Call {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Call(nil), p.calls...)
}

// CallsOf returns the calls of one action, in order.
func (p *Proxy) CallsOf(action string) []Call {
	var out []Call
	for _, c := range p.Calls() {
		if c.Action == action {
			out = append(out, c)
		}
	}
	return out
}

// MutatingCalls returns the calls that are not Describe*/Get*, in order.
func (p *Proxy) MutatingCalls() []Call {
	var out []Call
	for _, c := range p.Calls() {
		if c.Mutating() {
			out = append(out, c)
		}
	}
	return out
}

// ResetCalls forgets the recorded calls (not the imported keys).
func (p *Proxy) ResetCalls() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = nil
}

// ImportedKey is the public key material an ImportKeyPair call through the
// proxy gave for a key name in a region.
func (p *Proxy) ImportedKey(region, keyName string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k, ok := p.keys[region+"/"+keyName]
	return k, ok
}

var credentialScope = regexp.MustCompile(`Credential=[^/]*/[0-9]{8}/([a-z0-9-]+)/([a-z0-9-]+)/`)

// TestbedAppID is the SDK application id of the test bed's own EC2 clients:
// their calls are the test's, not the plugin's.
const TestbedAppID = "nixos-sd-testbed"

// FromTestbed says whether the test bed's own client (EC2Client) made the
// call rather than the code under test.
func (c Call) FromTestbed() bool {
	return strings.Contains(c.UserAgent, "app/"+TestbedAppID)
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading request: "+err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	params := url.Values{}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") || r.Method == http.MethodPost {
		if v, err := url.ParseQuery(string(body)); err == nil {
			params = v
		}
	}
	for k, vs := range r.URL.Query() {
		params[k] = append(params[k], vs...)
	}
	call := Call{Time: start, Action: params.Get("Action"), Params: map[string]string{}, UserAgent: r.Header.Get("User-Agent")}
	if m := credentialScope.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
		call.Region, call.Service = m[1], m[2]
	}
	for k, vs := range params {
		if k != "Action" && k != "Version" && len(vs) > 0 {
			call.Params[k] = vs[0]
		}
	}
	if call.Action == "ImportKeyPair" {
		if material, err := base64.StdEncoding.DecodeString(call.Params["PublicKeyMaterial"]); err == nil {
			p.mu.Lock()
			p.keys[call.Region+"/"+call.Params["KeyName"]] = strings.TrimSpace(string(material))
			p.mu.Unlock()
		}
	}

	if strings.HasPrefix(call.Action, "Testbed") {
		// The test bed's own actions go straight to moto, never through here.
		idx0 := p.record(call)
		p.update(idx0, func(c *Call) {
			c.Status, c.ErrorCode, c.Duration = http.StatusBadRequest, "InvalidAction", time.Since(start)
		})
		writeEC2Error(w, http.StatusBadRequest, "InvalidAction", "The action "+call.Action+" is not valid for this web service.", p.requestID())
		return
	}
	if p.serveNotEnabledRegion(w, call, start) {
		return
	}
	if code, msg, ok := p.notYetVisible(call); ok {
		idx := p.record(call)
		p.logf("fault proxy: %s #%d (%s): %s (not visible yet)", call.Action, idx+1, call.Region, code)
		p.update(idx, func(c *Call) {
			c.Injected, c.Status, c.ErrorCode, c.Duration = true, http.StatusBadRequest, code, time.Since(start)
		})
		writeEC2Error(w, http.StatusBadRequest, code, msg, p.requestID())
		return
	}
	rule := p.match(call)
	idx := p.record(call)
	if rule == nil && p.serveRepeatedToken(w, idx, call) {
		return
	}
	if rule != nil {
		p.logf("fault proxy: %s #%d (%s): applying rule %+v", call.Action, idx+1, call.Region, rule)
		p.update(idx, func(c *Call) { c.Injected = true })
		if rule.Delay > 0 {
			select {
			case <-time.After(rule.Delay):
			case <-r.Context().Done():
				return
			}
		}
		if rule.Drop {
			p.update(idx, func(c *Call) { c.Dropped = true; c.Duration = time.Since(start) })
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					conn.Close()
					return
				}
			}
			panic(http.ErrAbortHandler) // closes the connection without an answer
		}
		if rule.ErrorCode != "" {
			status := rule.HTTPStatus
			if status == 0 {
				status = defaultErrorStatus(rule.ErrorCode)
			}
			msg := rule.Message
			if msg == "" {
				msg = fmt.Sprintf("%s injected by the test bed's fault proxy", rule.ErrorCode)
			}
			p.update(idx, func(c *Call) {
				c.Status, c.ErrorCode, c.Duration = status, rule.ErrorCode, time.Since(start)
			})
			writeEC2Error(w, status, rule.ErrorCode, msg, p.requestID())
			return
		}
		if rule.AnswerDelay > 0 || rule.DropAnswer {
			status, code, dropped := p.serveLateAnswer(w, r, rule, call)
			p.update(idx, func(c *Call) { c.Status, c.ErrorCode, c.Dropped, c.Duration = status, code, dropped, time.Since(start) })
			p.signalMutation()
			return
		}
		if len(rule.PoolErrors) > 0 && call.Action == "CreateFleet" {
			status, code := p.serveFleetWithPoolErrors(w, r, body, rule)
			p.update(idx, func(c *Call) { c.Status, c.ErrorCode, c.Duration = status, code, time.Since(start) })
			p.signalMutation()
			return
		}
	}

	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	hides := rule != nil && (rule.NotFoundCalls > 0 || rule.NotFoundFor > 0)
	p.rp.ServeHTTP(rec, r)
	p.tokens.remember(call, rec.status, rec.body.Bytes())
	if hides && rec.status == http.StatusOK {
		ids := p.hide(call.Action, rec.body.Bytes(), rule)
		p.logf("fault proxy: %s #%d: %v not visible yet", call.Action, idx+1, ids)
	}
	p.update(idx, func(c *Call) {
		c.Status, c.Duration = rec.status, time.Since(start)
		if rec.status >= 400 {
			c.ErrorCode = parseErrorCode(rec.body.Bytes())
		}
	})
	// The record is complete before the caller sees the answer.
	rec.flush()
	if call.Mutating() {
		p.signalMutation()
	}
}

// signalMutation wakes the watcher after a mutating call moto answered.
func (p *Proxy) signalMutation() {
	p.mu.Lock()
	p.lastMut = time.Now()
	p.mu.Unlock()
	select {
	case p.mutated <- struct{}{}:
	default:
	}
}

func (p *Proxy) lastMutation() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastMut
}

// match finds the rule applying to this call, counting it for every rule
// whose action (and HasParam) matches.
func (p *Proxy) match(c Call) *Rule {
	p.mu.Lock()
	defer p.mu.Unlock()
	var hit *Rule
	for _, rs := range p.rules {
		if rs.Action != "" && rs.Action != c.Action {
			continue
		}
		if _, ok := c.Params[rs.HasParam]; rs.HasParam != "" && !ok {
			continue
		}
		if rs.After != "" && !slices.ContainsFunc(p.calls, func(r Call) bool { return r.Action == rs.After }) {
			continue
		}
		rs.seen++
		if hit == nil && (rs.Nth == 0 || rs.Nth == rs.seen) {
			r := rs.Rule
			hit = &r
		}
	}
	return hit
}

func (p *Proxy) record(c Call) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	c.Seq = len(p.calls) + 1
	p.calls = append(p.calls, c)
	return len(p.calls) - 1
}

func (p *Proxy) update(idx int, f func(*Call)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if idx < len(p.calls) {
		f(&p.calls[idx])
	}
}

func (p *Proxy) requestID() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reqSeq++
	return fmt.Sprintf("%s-%04x-4000-8000-%012x", p.reqBase, p.reqSeq&0xffff, p.reqSeq)
}

func defaultErrorStatus(code string) int {
	switch code {
	case "RequestLimitExceeded", "Unavailable", "InternalError", "ServiceUnavailable":
		return http.StatusServiceUnavailable
	}
	return http.StatusBadRequest
}

// writeEC2Error answers like EC2 does for a failed Query call.
func writeEC2Error(w http.ResponseWriter, status int, code, message, requestID string) {
	var msg bytes.Buffer
	_ = xml.EscapeText(&msg, []byte(message))
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
		`<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>%s</RequestID></Response>`,
		code, msg.String(), requestID)
}

var errorCodeRE = regexp.MustCompile(`<Code>([^<]*)</Code>`)

func parseErrorCode(body []byte) string {
	if m := errorCodeRE.FindSubmatch(body); m != nil {
		return string(m[1])
	}
	return ""
}

// statusRecorder holds moto's answer, its status and body, until flush
// passes it on.
type statusRecorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (s *statusRecorder) WriteHeader(code int) { s.status = code }

func (s *statusRecorder) Write(b []byte) (int, error) { return s.body.Write(b) }

// flush sends the held answer to the caller.
func (s *statusRecorder) flush() {
	s.ResponseWriter.WriteHeader(s.status)
	_, _ = s.ResponseWriter.Write(s.body.Bytes())
}

// Summary renders the recorded calls as lines (for logs).
func (p *Proxy) Summary() string {
	var b strings.Builder
	for _, c := range p.Calls() {
		keys := make([]string, 0, len(c.Params))
		for k := range c.Params {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintf(&b, "#%d %s %s %s status=%d", c.Seq, c.Time.Format("15:04:05.000"), c.Region, c.Action, c.Status)
		if c.ErrorCode != "" {
			fmt.Fprintf(&b, " error=%s", c.ErrorCode)
		}
		if c.Injected {
			b.WriteString(" injected")
		}
		if c.Dropped {
			b.WriteString(" dropped")
		}
		b.WriteString("\n")
	}
	return b.String()
}
