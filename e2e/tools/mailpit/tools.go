//go:build tools

// Package tools pins Mailpit, the real SMTP server the alert-notification
// tests deliver email to; e2e/tools/build.sh builds it from this module.
package tools

import _ "github.com/axllent/mailpit"
