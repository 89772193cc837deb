package scrape

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strconv"
	"syscall"
)

// StatusError is a target's answer other than 200.
type StatusError struct {
	Code   int
	Status string // "503 Service Unavailable"
}

func (e *StatusError) Error() string { return "server returned HTTP status " + e.Status }

// Failure kinds: what a failed scrape is grouped by in logs (a change of
// kind is logged at once, the same kind again only at a cadence) and in
// scrapeflux_scrape_failure_kinds_total. An error's text is not used: it
// carries local ports and addresses that change on every scrape.
const (
	FailTimeout     = "timeout"
	FailRefused     = "refused"
	FailReset       = "reset"
	FailDNS         = "dns"
	FailTLS         = "tls"
	FailHTTPStatus  = "http_status"
	FailBodyLimit   = "body_limit"
	FailSampleLimit = "sample_limit"
	FailLabelLimit  = "label_limit"
	FailParse       = "parse"
	FailOther       = "other"
)

// failureKind classifies err; parsing says it came from reading the body
// rather than from fetching it. detail adds what tells two failures of
// one kind apart for a reader (the status code), never an address.
func failureKind(err error, parsing bool) (kind, detail string) {
	var se *StatusError
	var dnsErr *net.DNSError
	var nerr net.Error
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var recErr tls.RecordHeaderError
	switch {
	case errors.Is(err, ErrSampleLimit):
		return FailSampleLimit, ""
	case errors.Is(err, ErrLabelLimit):
		return FailLabelLimit, ""
	case errors.Is(err, ErrBodyTooLarge), errors.Is(err, errHeaderTooLarge):
		return FailBodyLimit, ""
	case parsing:
		return FailParse, ""
	case errors.As(err, &se):
		return FailHTTPStatus, strconv.Itoa(se.Code)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &nerr) && nerr.Timeout():
		return FailTimeout, ""
	case errors.As(err, &dnsErr):
		return FailDNS, ""
	case errors.Is(err, syscall.ECONNREFUSED):
		return FailRefused, ""
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF), errors.Is(err, syscall.EPIPE):
		return FailReset, ""
	case errors.As(err, &certErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr), errors.As(err, &recErr):
		return FailTLS, ""
	}
	return FailOther, ""
}
