package awscommon

import (
	"errors"
	"slices"

	"github.com/aws/smithy-go"
)

// credentialErrorCodes are the EC2/STS codes that mean the credentials are
// wrong, expired, or not allowed in the region.
var credentialErrorCodes = []string{
	"AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken",
	"RequestExpired", "OptInRequired", "Blocked", "UnrecognizedClientException",
	"InvalidAccessKeyId",
}

// permissionErrorCodes are the codes that mean valid credentials lack a
// permission.
var permissionErrorCodes = []string{"UnauthorizedOperation", "AccessDenied"}

// ErrorCode is the AWS error code of err ("" when err is not an API error).
func ErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// IsCredentialError reports whether code means the credentials are wrong.
func IsCredentialError(code string) bool { return slices.Contains(credentialErrorCodes, code) }

// IsPermissionError reports whether code means the credentials lack a
// permission.
func IsPermissionError(code string) bool { return slices.Contains(permissionErrorCodes, code) }
