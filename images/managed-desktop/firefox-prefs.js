// Sluice desktop: Firefox ESR opens what its user asks for and nothing else on its own (no
// first-run pages, no data submission), and resolves names only through the host's resolver.
pref("datareporting.policy.firstRunURL", "");
pref("datareporting.policy.dataSubmissionEnabled", false);
pref("browser.aboutwelcome.enabled", false);
pref("browser.startup.homepage_override.mstone", "ignore");
pref("network.trr.mode", 5, locked);
