// Package sdktest runs providers' own SDKs through Sluice against their
// official mocks (stripe-go against stripe-mock), to show that the gateway
// keeps an SDK working: typed errors for the provider's and the gateway's
// errors, no re-sends of errors that must not be re-sent, headers passed
// unchanged, idempotent replay. It holds tests only.
package sdktest
