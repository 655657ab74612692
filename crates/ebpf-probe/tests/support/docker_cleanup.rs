//! Removes a test's container and image when the test ends, passed or not.

use std::process::Command;

/// (container id, image tag): `docker rm -f` then `docker rmi -f` on drop.
pub struct DockerCleanup(pub String, pub String);

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
        let _ = Command::new("docker").args(["rmi", "-f", &self.1]).output();
    }
}
