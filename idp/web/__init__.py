"""Cross-cutting web concerns: security headers, error pages, cookies, safe redirects."""
