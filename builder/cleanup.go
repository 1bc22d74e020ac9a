package builder

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// cleanupContext is the context cleanups run with: a fresh one, since the
// build's context is already cancelled after Ctrl-C, bounded so a dead API
// cannot hang Packer forever.
func cleanupContext(cfg *Config) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*cfg.StateTimeoutDuration()+time.Minute)
}

// cleanupError reports a resource the build could not remove, with what to do.
func cleanupError(ui packersdk.Ui, what, id string, err error) {
	if ui == nil {
		return
	}
	ui.Error(fmt.Sprintf("Could not delete %s %s: %v. Delete it by hand (EC2 console, or the AWS CLI), and look for other resources tagged %s.", what, id, err, BuildIDTag))
}

// cleanupResource deletes, with del, the resource whose id the state holds
// under key, tells the user, and forgets the id once the resource is gone.
func cleanupResource(state multistep.StateBag, key, what string, del func(context.Context, stepEnv, string) error) {
	id := getString(state, key)
	if id == "" {
		return
	}
	e, err := env(state)
	if err != nil {
		return
	}
	ctx, cancel := cleanupContext(e.cfg)
	defer cancel()
	e.ui.Say(fmt.Sprintf("Deleting temporary %s %s...", what, id))
	if err := del(ctx, e, id); err != nil {
		cleanupError(e.ui, what, id, err)
		return
	}
	state.Remove(key)
}
