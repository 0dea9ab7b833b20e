//! The settings a reload may change while the server runs (see [`crate::reload`]), as the
//! server reads them now.
use parking_lot::RwLock;

use crate::config::{Config, RegionConfig};

/// The reloadable settings as the server uses them now.
pub struct Live {
    regions: RwLock<Vec<RegionConfig>>,
    alert_webhook: RwLock<Option<String>>,
}

impl Live {
    pub fn new(config: &Config) -> Live {
        Live { regions: RwLock::new(config.regions.clone()), alert_webhook: RwLock::new(config.alert_webhook.clone()) }
    }

    /// The configured regions (empty: the server lists itself).
    pub fn regions(&self) -> Vec<RegionConfig> {
        self.regions.read().clone()
    }

    /// The server-wide webhook for pool alerts.
    pub fn alert_webhook(&self) -> Option<String> {
        self.alert_webhook.read().clone()
    }

    pub(crate) fn set_regions(&self, regions: Vec<RegionConfig>) {
        *self.regions.write() = regions;
    }

    pub(crate) fn set_alert_webhook(&self, url: Option<String>) {
        *self.alert_webhook.write() = url;
    }
}
