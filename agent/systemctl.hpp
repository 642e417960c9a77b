// systemctl for a user's own service manager, reached the way the user reaches it: through the
// manager's private socket in /run/user/UID, as that user (the manager answers its owner alone).
// No user D-Bus is needed: server installs lack it (dbus-user-session), and `--machine=USER@`
// goes through it. runuser (util-linux) switches user without opening a login session.
#pragma once

#include <string>
#include <vector>

#include "agent/expected.hpp"

namespace gpt {

class Root;

// {"runuser", "-u", USER, "--", "env", "XDG_RUNTIME_DIR=/run/user/UID", "systemctl", "--user"}:
// the verb and the unit follow. An error when the host has no such user.
Expected<std::vector<std::string>> user_systemctl(const Root& root, const std::string& user);

}  // namespace gpt
