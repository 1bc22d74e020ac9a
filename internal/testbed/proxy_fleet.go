package testbed

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// PoolError fails the CreateFleet pools (launch template overrides) it
// matches, the way EC2 answers an instant fleet whose pools fail: HTTP 200,
// one Errors entry per failed pool carrying that pool's
// LaunchTemplateAndOverrides, and in Instances what the other pools
// launched. Empty fields match any pool.
type PoolError struct {
	InstanceType     string
	SubnetID         string
	AvailabilityZone string
	// ErrorCode is EC2's per-pool code, e.g. InsufficientInstanceCapacity,
	// Unsupported, MaxSpotInstanceCountExceeded, VcpuLimitExceeded,
	// InvalidParameterValue.
	ErrorCode string
	// Message is the error's message; empty = EC2's usual wording for the code.
	Message string
}

func (pe PoolError) matches(o fleetOverride) bool {
	return (pe.InstanceType == "" || pe.InstanceType == o.InstanceType) &&
		(pe.SubnetID == "" || pe.SubnetID == o.SubnetID) &&
		(pe.AvailabilityZone == "" || pe.AvailabilityZone == o.AvailabilityZone)
}

// fleetOverride is one override of a CreateFleet request (launch template
// config 1; the builder sends one).
type fleetOverride struct {
	N                int
	InstanceType     string
	SubnetID         string
	AvailabilityZone string
	MaxPrice         string
}

const overridePrefix = "LaunchTemplateConfigs.1.Overrides."

func fleetOverrides(params url.Values) []fleetOverride {
	byN := map[int]*fleetOverride{}
	for k, vs := range params {
		rest, ok := strings.CutPrefix(k, overridePrefix)
		if !ok || len(vs) == 0 {
			continue
		}
		num, field, ok := strings.Cut(rest, ".")
		n, err := strconv.Atoi(num)
		if !ok || err != nil {
			continue
		}
		o := byN[n]
		if o == nil {
			o = &fleetOverride{N: n}
			byN[n] = o
		}
		switch field {
		case "InstanceType":
			o.InstanceType = vs[0]
		case "SubnetId":
			o.SubnetID = vs[0]
		case "AvailabilityZone":
			o.AvailabilityZone = vs[0]
		case "MaxPrice":
			o.MaxPrice = vs[0]
		}
	}
	out := make([]fleetOverride, 0, len(byN))
	for _, o := range byN {
		out = append(out, *o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].N < out[j].N })
	return out
}

// poolErrorMessage is EC2's wording for a failed pool.
func poolErrorMessage(code string, o fleetOverride) string {
	where := firstNonEmptyString(o.AvailabilityZone, o.SubnetID, "the Availability Zone you requested")
	switch code {
	case "InsufficientInstanceCapacity":
		return fmt.Sprintf("We currently do not have sufficient %s capacity in the Availability Zone you requested (%s). Our system will be working on provisioning additional capacity.", o.InstanceType, where)
	case "Unsupported":
		return fmt.Sprintf("Your requested instance type (%s) is not supported in your requested Availability Zone (%s). Please retry your request by not specifying an Availability Zone or choosing another one.", o.InstanceType, where)
	case "MaxSpotInstanceCountExceeded":
		return "Max spot instance count exceeded"
	case "VcpuLimitExceeded":
		return "You have requested more vCPU capacity than your current vCPU limit of 0 allows for the instance bucket that the specified instance type belongs to. Please visit http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit."
	case "InvalidParameterValue":
		return fmt.Sprintf("The instance type %s is not valid for this request.", o.InstanceType)
	}
	return code + " (injected by the test bed's fault proxy)"
}

func firstNonEmptyString(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

var (
	capacityParams = []string{"TargetCapacitySpecification.TotalTargetCapacity", "TargetCapacitySpecification.SpotTargetCapacity", "TargetCapacitySpecification.OnDemandTargetCapacity"}
	fleetIDRE      = regexp.MustCompile(`<fleetId>[^<]*</fleetId>`)
	errorSetRE     = regexp.MustCompile(`<errorSet\s*/>|<errorSet>\s*</errorSet>`)
)

// failedPool is a pool a PoolError failed.
type failedPool struct {
	o    fleetOverride
	code string
	msg  string
}

// serveFleetWithPoolErrors answers a CreateFleet call whose pools the rule's
// PoolErrors fail: moto gets the request without the failed overrides (with
// no capacity when none is left), and the answer gets their Errors entries.
// It returns the status and the first error code answered.
func (p *Proxy) serveFleetWithPoolErrors(w http.ResponseWriter, r *http.Request, body []byte, rule *Rule) (int, string) {
	params, err := url.ParseQuery(string(body))
	if err != nil || params.Get("Type") != "instant" {
		writeEC2Error(w, http.StatusBadRequest, "InvalidParameterValue", "the test bed's pool errors apply to CreateFleet of type instant only", p.requestID())
		return http.StatusBadRequest, "InvalidParameterValue"
	}
	var failed []failedPool
	var kept []fleetOverride
	for _, o := range fleetOverrides(params) {
		hit := false
		for _, pe := range rule.PoolErrors {
			if pe.matches(o) {
				msg := pe.Message
				if msg == "" {
					msg = poolErrorMessage(pe.ErrorCode, o)
				}
				failed = append(failed, failedPool{o: o, code: pe.ErrorCode, msg: msg})
				hit = true
				break
			}
		}
		if !hit {
			kept = append(kept, o)
		}
	}
	forward := url.Values{}
	for k, vs := range params {
		if !strings.HasPrefix(k, overridePrefix) {
			forward[k] = vs
		}
	}
	if len(kept) == 0 {
		// EC2 still makes the (empty) instant fleet; moto does with no capacity.
		kept = []fleetOverride{failed[0].o}
		for _, k := range capacityParams {
			if forward.Has(k) {
				forward.Set(k, "0")
			}
		}
	}
	for i, o := range kept {
		for k, vs := range params {
			if rest, ok := strings.CutPrefix(k, fmt.Sprintf("%s%d.", overridePrefix, o.N)); ok {
				forward[fmt.Sprintf("%s%d.%s", overridePrefix, i+1, rest)] = vs
			}
		}
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, p.target.String()+"/", strings.NewReader(forward.Encode()))
	if err != nil {
		writeEC2Error(w, http.StatusInternalServerError, "InternalError", err.Error(), p.requestID())
		return http.StatusInternalServerError, "InternalError"
	}
	req.Header = r.Header.Clone()
	req.Header.Del("Content-Length")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		writeEC2Error(w, http.StatusServiceUnavailable, "Unavailable", err.Error(), p.requestID())
		return http.StatusServiceUnavailable, "Unavailable"
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		w.Write(answer)
		return resp.StatusCode, parseErrorCode(answer)
	}
	errs := fleetErrorSet(params, failed)
	switch {
	case errorSetRE.Match(answer):
		answer = errorSetRE.ReplaceAll(answer, []byte(errs))
	case fleetIDRE.Match(answer):
		loc := fleetIDRE.FindIndex(answer)
		answer = append(answer[:loc[1]:loc[1]], append([]byte(errs), answer[loc[1]:]...)...)
	default:
		writeEC2Error(w, http.StatusInternalServerError, "InternalError", "the test bed's fault proxy found no fleetId in moto's CreateFleet answer", p.requestID())
		return http.StatusInternalServerError, "InternalError"
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(http.StatusOK)
	w.Write(answer)
	return http.StatusOK, failed[0].code
}

// fleetErrorSet renders CreateFleet's errorSet as EC2's Query API does.
func fleetErrorSet(params url.Values, failed []failedPool) string {
	esc := func(s string) string {
		var b bytes.Buffer
		_ = xml.EscapeText(&b, []byte(s))
		return b.String()
	}
	lifecycle := params.Get("TargetCapacitySpecification.DefaultTargetCapacityType")
	if lifecycle == "" {
		lifecycle = "on-demand"
	}
	var b strings.Builder
	b.WriteString("<errorSet>")
	for _, f := range failed {
		b.WriteString("<item><launchTemplateAndOverrides><launchTemplateSpecification>")
		if id := params.Get("LaunchTemplateConfigs.1.LaunchTemplateSpecification.LaunchTemplateId"); id != "" {
			fmt.Fprintf(&b, "<launchTemplateId>%s</launchTemplateId>", esc(id))
		}
		if name := params.Get("LaunchTemplateConfigs.1.LaunchTemplateSpecification.LaunchTemplateName"); name != "" {
			fmt.Fprintf(&b, "<launchTemplateName>%s</launchTemplateName>", esc(name))
		}
		if v := params.Get("LaunchTemplateConfigs.1.LaunchTemplateSpecification.Version"); v != "" {
			fmt.Fprintf(&b, "<version>%s</version>", esc(v))
		}
		b.WriteString("</launchTemplateSpecification><overrides>")
		fmt.Fprintf(&b, "<instanceType>%s</instanceType>", esc(f.o.InstanceType))
		if f.o.SubnetID != "" {
			fmt.Fprintf(&b, "<subnetId>%s</subnetId>", esc(f.o.SubnetID))
		}
		if f.o.AvailabilityZone != "" {
			fmt.Fprintf(&b, "<availabilityZone>%s</availabilityZone>", esc(f.o.AvailabilityZone))
		}
		if f.o.MaxPrice != "" {
			fmt.Fprintf(&b, "<maxPrice>%s</maxPrice>", esc(f.o.MaxPrice))
		}
		fmt.Fprintf(&b, "</overrides></launchTemplateAndOverrides><lifecycle>%s</lifecycle><errorCode>%s</errorCode><errorMessage>%s</errorMessage></item>",
			esc(lifecycle), esc(f.code), esc(f.msg))
	}
	b.WriteString("</errorSet>")
	return b.String()
}
