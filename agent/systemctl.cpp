#include "agent/systemctl.hpp"

#include "agent/host.hpp"

namespace gpt {

Expected<std::vector<std::string>> user_systemctl(const Root& root, const std::string& user) {
  auto uid = lookup_id(root, user, false);
  if (!uid) return Error{uid.error()};
  return std::vector<std::string>{
      "runuser", "-u", user, "--", "env", "XDG_RUNTIME_DIR=/run/user/" + std::to_string(*uid), "systemctl", "--user"};
}

}  // namespace gpt
