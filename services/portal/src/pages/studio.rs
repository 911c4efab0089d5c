//! The process studio: process owners see, change, try and publish the
//! town's procedures and routing rules.

use guichet_platform::auth::Role;

use crate::session::Session;

/// Process owners and admins work in the studio (`has` lets admins in).
pub fn may_edit(agent: &Session) -> bool {
    agent.has(Role::ProcessOwner)
}
