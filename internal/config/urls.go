package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// placeholder is a {name} a vendor fills in (Chabok's {app_id}).
var placeholder = regexp.MustCompile(`\{[a-z_]+\}`)

// baseURLError checks a sink's base_url before anything is sent to it: an
// http or https URL with a host and a port in range. Empty is the vendor's
// default.
func baseURLError(key, raw string) error {
	if raw == "" {
		return nil
	}
	shown := RedactURL(raw)
	const fix = "write it as https://host[:port][/path], or leave it out for the vendor's default"
	if strings.ContainsAny(raw, " \t\n") {
		return fmt.Errorf("%s: %q contains a space; %s", key, shown, fix)
	}
	u, err := url.Parse(placeholder.ReplaceAllString(raw, "x"))
	if err != nil {
		var ue *url.Error
		msg := err.Error()
		if errors.As(err, &ue) {
			msg = ue.Err.Error()
		}
		return fmt.Errorf("%s: %q is not a URL (%s); %s", key, shown, msg, fix)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%s: %q has scheme %q; use http or https (%s)", key, shown, u.Scheme, fix)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("%s: %q has no host; %s", key, shown, fix)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%s: %q has port %s; use 1 to 65535", key, shown, p)
		}
	}
	if u.User != nil {
		return fmt.Errorf("%s: carries credentials in the URL; put them in the sink's settings", key)
	}
	return nil
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
