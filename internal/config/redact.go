package config

import (
	"net/url"
	"regexp"
	"strings"
)

// userinfo is the credentials part of a URL that url.Parse refuses.
var userinfo = regexp.MustCompile(`//[^/@]*@`)

// RedactURL hides the credentials of a URL, or of each URL of a
// comma-separated list (nats.url), before it is printed or logged:
// nats://user:pass@host → nats://user:***@host, and a token alone
// (nats://token@host) → nats://***@host; the value of a query parameter
// whose name reads as a credential (?api_key=…) → ?api_key=***.
func RedactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = redactOne(p)
	}
	return strings.Join(parts, ",")
}

func redactOne(s string) string {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil || u.Host == "" {
		return userinfo.ReplaceAllString(s, "//***@")
	}
	query := redactQuery(u.RawQuery)
	if u.User == nil && query == u.RawQuery {
		return s
	}
	u.RawQuery = query
	if u.User == nil {
		lead := s[:len(s)-len(strings.TrimLeft(s, " "))]
		return lead + u.String()
	}
	const mark = "REDACTED0MARK"
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), mark)
	} else {
		u.User = url.User(mark) // a token
	}
	lead := s[:len(s)-len(strings.TrimLeft(s, " "))]
	return lead + strings.Replace(u.String(), mark, "***", 1)
}

// redactQuery hides the values of the parameters of a raw query string
// whose names read as a credential, keeping the rest as written.
func redactQuery(raw string) string {
	if raw == "" {
		return raw
	}
	params := strings.Split(raw, "&")
	for i, p := range params {
		name, _, hasValue := strings.Cut(p, "=")
		if n, err := url.QueryUnescape(name); err == nil {
			name = n
		}
		if hasValue && looksLikeCredential(name) {
			params[i] = p[:strings.Index(p, "=")] + "=***"
		}
	}
	return strings.Join(params, "&")
}
