package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// placeholder is a {name} a vendor fills in (Chabok's {app_id}).
var placeholder = regexp.MustCompile(`\{[a-z_]+\}`)

// baseURLCheck checks a sink's base_url before anything is sent to it: an
// http or https URL with a host and a port in range, and no fragment
// (never sent to a server, so a mistake). Empty is the vendor's default.
// The warning, if any, is of a query parameter that reads as a credential:
// the URL is logged and shown in errors (redacted by RedactURL, but a
// credential belongs in the sink's settings).
func baseURLCheck(key, raw string) (warning string, err error) {
	if raw == "" {
		return "", nil
	}
	shown := RedactURL(raw)
	const fix = "write it as https://host[:port][/path], or leave it out for the vendor's default"
	if strings.ContainsAny(raw, " \t\n") {
		return "", fmt.Errorf("%s: %q contains a space; %s", key, shown, fix)
	}
	u, err := url.Parse(placeholder.ReplaceAllString(raw, "x"))
	if err != nil {
		var ue *url.Error
		msg := err.Error()
		if errors.As(err, &ue) {
			msg = ue.Err.Error()
		}
		return "", fmt.Errorf("%s: %q is not a URL (%s); %s", key, shown, msg, fix)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("%s: %q has scheme %q; use http or https (%s)", key, shown, u.Scheme, fix)
	}
	if u.Hostname() == "" {
		return "", fmt.Errorf("%s: %q has no host; %s", key, shown, fix)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("%s: %q has port %s; use 1 to 65535", key, shown, p)
		}
	}
	if u.User != nil {
		return "", fmt.Errorf("%s: carries credentials in the URL; put them in the sink's settings", key)
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		// The fragment is not shown: it may be what someone meant as a token.
		before, _, _ := strings.Cut(shown, "#")
		return "", fmt.Errorf("%s: %q has a fragment (#…), which is never sent to the server; remove it", key, before+"#…")
	}
	if names := credentialParams(u.Query()); len(names) > 0 {
		return fmt.Sprintf("%s: its query string has %s, which reads as a credential: the URL is logged and shown in errors; "+
			"put credentials in the sink's settings if the vendor takes them there", key, strings.Join(names, ", ")), nil
	}
	return "", nil
}

// credentialParams are the query parameters whose names read as a
// credential (api_key, token, sig, …), sorted.
func credentialParams(q url.Values) []string {
	var names []string
	for name := range q {
		if looksLikeCredential(name) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// credentialWords are what a credential's name contains; credentialParts
// are whole words of a name (split at _ - .), too short to match inside
// other words (design, keyboard).
var (
	credentialWords = []string{"token", "secret", "passw", "pwd", "apikey", "api_key", "api-key", "auth", "credential", "signature", "session", "jwt"}
	credentialParts = []string{"key", "sig", "pass", "code"}
)

func looksLikeCredential(name string) bool {
	n := strings.ToLower(name)
	for _, w := range credentialWords {
		if strings.Contains(n, w) {
			return true
		}
	}
	for _, part := range strings.FieldsFunc(n, func(r rune) bool { return r == '_' || r == '-' || r == '.' }) {
		if slices.Contains(credentialParts, part) {
			return true
		}
	}
	return false
}

// loopback says whether host:port listens on loopback only. An empty or
// unparsable address is not loopback (":4222" is every interface).
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
