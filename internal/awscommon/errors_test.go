package awscommon

import (
	"errors"
	"fmt"
	"testing"

	"github.com/aws/smithy-go"
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
