// Package alerting has no code of its own. Its test proves the operations
// files under deploy/ against the real thing: it starts a real Prometheus
// (the Debian package's binary, found on PATH) scraping real gateways with
// deploy/prometheus/alerts.yml loaded, drives the failure each alert is
// named for with bounded traffic to upstreams on 127.0.0.1, and checks that
// every alert reaches pending or firing, and that every query of
// deploy/grafana/dashboards/sluice.json returns data.
package alerting
