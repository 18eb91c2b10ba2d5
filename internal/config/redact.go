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
// (nats://token@host) → nats://***@host.
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
	if u.User == nil {
		return s
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
