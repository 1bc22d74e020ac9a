package awscommon

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

func TestErrorCodes(t *testing.T) {
	wrapped := fmt.Errorf("calling EC2: %w", &smithy.GenericAPIError{Code: "AuthFailure", Message: "no"})
	if got := ErrorCode(wrapped); got != "AuthFailure" {
		t.Errorf("ErrorCode = %q, want AuthFailure", got)
	}
	if got := ErrorCode(errors.New("dial tcp: refused")); got != "" {
		t.Errorf("ErrorCode of a network error = %q, want empty", got)
	}
	for code, want := range map[string][2]bool{
		"AuthFailure":           {true, false},
		"ExpiredToken":          {true, false},
		"UnauthorizedOperation": {false, true},
		"AccessDenied":          {false, true},
		"Throttling":            {false, false},
	} {
		if got := [2]bool{IsCredentialError(code), IsPermissionError(code)}; got != want {
			t.Errorf("%s: credential/permission = %v, want %v", code, got, want)
		}
	}
}

func TestRetriesAdvice(t *testing.T) {
	throttled := &smithy.GenericAPIError{Code: "RequestLimitExceeded", Message: "Request limit exceeded."}
	if got := RetriesAdvice(fmt.Errorf("DescribeRegions: %w", throttled), 3); !strings.Contains(got, "throttled") || !strings.Contains(got, "max_retries") || !strings.Contains(got, "3 tries") {
		t.Errorf("throttling advice = %q", got)
	}
	server := &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 503}}, Err: &smithy.GenericAPIError{Code: "Unavailable"}}
	if got := RetriesAdvice(server, 10); !strings.Contains(got, "HTTP 503") || !strings.Contains(got, "try again") {
		t.Errorf("5xx advice = %q", got)
	}
	if got := RetriesAdvice(&smithy.GenericAPIError{Code: "UnauthorizedOperation"}, 10); got != "" {
		t.Errorf("advice for a permission error = %q", got)
	}
}
