package testbed

import (
	"net/http"
	"slices"
	"time"
)

// NotEnabledRegions are opt-in regions the test bed's account has not
// enabled. AWS answers any EC2 call signed for such a region with HTTP 401
// AuthFailure "AWS was not able to validate the provided access
// credentials", the answer wrong credentials get too, while STS in the
// partition's home region (us-east-1) still accepts the credentials. moto
// serves every region alike; the proxy answers these as AWS does.
var NotEnabledRegions = []string{"ap-east-1", "me-south-1", "af-south-1"}

// serveNotEnabledRegion refuses an EC2 call to a region the account has not
// enabled; it returns false for any other call.
func (p *Proxy) serveNotEnabledRegion(w http.ResponseWriter, c Call, start time.Time) bool {
	if (c.Service != "ec2" && c.Service != "") || !slices.Contains(NotEnabledRegions, c.Region) {
		return false
	}
	idx := p.record(c)
	p.update(idx, func(r *Call) {
		r.Status, r.ErrorCode, r.Duration = http.StatusUnauthorized, "AuthFailure", time.Since(start)
	})
	writeEC2Error(w, http.StatusUnauthorized, "AuthFailure", "AWS was not able to validate the provided access credentials", p.requestID())
	return true
}
