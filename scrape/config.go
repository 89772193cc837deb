package scrape

import (
	"errors"
	"fmt"
	"time"
)

// Config is what every scrape loop of a pool shares.
type Config struct {
	// Interval between the starts of two scrapes of one target.
	Interval time.Duration
	// Timeout of one scrape, at most Interval.
	Timeout time.Duration
	// BodyLimit caps a body after decompression, in bytes.
	BodyLimit int64
	// HonorTimestamps keeps timestamps the target exposes instead of
	// stamping every sample with the scrape's start.
	HonorTimestamps bool
}

// Default values of Config.
const (
	DefaultInterval  = 15 * time.Second
	DefaultTimeout   = 10 * time.Second
	DefaultBodyLimit = 50 << 20
)

// Validate rejects a config the pool cannot run, naming the field.
func (c *Config) Validate() error {
	var errs []error
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("interval must be positive, got %s", c.Interval))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("timeout must be positive, got %s", c.Timeout))
	} else if c.Interval > 0 && c.Timeout > c.Interval {
		errs = append(errs, fmt.Errorf("timeout %s must not exceed interval %s", c.Timeout, c.Interval))
	}
	if c.BodyLimit <= 0 {
		errs = append(errs, fmt.Errorf("body limit must be positive, got %d", c.BodyLimit))
	}
	return errors.Join(errs...)
}
