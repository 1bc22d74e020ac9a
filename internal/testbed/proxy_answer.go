package testbed

import (
	"context"
	"net/http"
	"net/http/httptest"
	"time"
)

// serveLateAnswer passes the call to moto with a context of its own (EC2
// goes on with a request it received when the caller hangs up), then holds
// the answer rule.AnswerDelay, or until the caller goes away, and answers,
// or drops the connection without an answer when rule.DropAnswer is set or
// the caller left. It returns the status moto answered, its error code and
// whether the answer was dropped.
func (p *Proxy) serveLateAnswer(w http.ResponseWriter, r *http.Request, rule *Rule, call Call) (int, string, bool) {
	rec := httptest.NewRecorder()
	p.rp.ServeHTTP(rec, r.Clone(context.WithoutCancel(r.Context())))
	// EC2 acted on the request: a retry with its client token gets this answer.
	p.tokens.remember(call, rec.Code, rec.Body.Bytes())
	code := ""
	if rec.Code >= 400 {
		code = parseErrorCode(rec.Body.Bytes())
	}
	gone := false
	if rule.AnswerDelay > 0 {
		select {
		case <-time.After(rule.AnswerDelay):
		case <-r.Context().Done():
			gone = true
		}
	}
	if rule.DropAnswer || gone {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return rec.Code, code, true
			}
		}
		panic(http.ErrAbortHandler)
	}
	for k, vs := range rec.Header() {
		w.Header()[k] = vs
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
	return rec.Code, code, false
}
