#include "modules/lib/grub_default.hpp"

#include <algorithm>
#include <map>
#include <optional>

#include "agent/facts.hpp"
#include "agent/text.hpp"
#include "modules/lib/handlers.hpp"

namespace gpt {
namespace {

bool is_blank(char c) { return c == ' ' || c == '\t'; }
bool ident_start(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
bool ident_char(char c) { return ident_start(c) || (c >= '0' && c <= '9'); }

enum class SegKind { plain, dq, sq };
struct Segment {
  SegKind kind;
  size_t begin, end;  // raw, quotes included
};
struct Cooked {
  char c;
  size_t raw;
  int seg;
  bool var;  // an unescaped '$'
};
struct Param {
  std::string text;
  size_t raw_begin, raw_end;
  int first_seg, last_seg;
  bool opaque;  // holds a variable reference: its value is not known here
};
struct Assignment {
  int line = 0;
  size_t value_begin = 0, value_end = 0;
  std::vector<Segment> segs;
  std::vector<Cooked> cooked;
  std::vector<Param> params;
  bool self_ref = false;
  bool cmdsub = false;
};
struct Scan {
  std::vector<Assignment> assigns;             // of the key, in file order
  std::optional<size_t> after_commented_line;  // offset just past the last `#KEY=` line
};

// The line number of `pos`, counted on from the last call's position: scan() asks in file order,
// so a file is counted once (counting from the start each time made large files quadratic).
struct LineCounter {
  std::string_view text;
  size_t pos = 0;
  int line = 1;
  int at(size_t to) {
    to = std::min(to, text.size());
    if (to < pos) pos = 0, line = 1;
    line +=
        static_cast<int>(std::count(text.begin() + static_cast<long>(pos), text.begin() + static_cast<long>(to), '\n'));
    pos = to;
    return line;
  }
};

bool refers_to(std::string_view param, std::string_view key) {
  for (size_t at = param.find('$'); at != std::string_view::npos; at = param.find('$', at + 1)) {
    size_t p = at + 1;
    if (p < param.size() && param[p] == '{') ++p;
    if (param.substr(p, key.size()) == key && (p + key.size() == param.size() || !ident_char(param[p + key.size()])))
      return true;
  }
  return false;
}

Expected<size_t> lex_word(std::string_view text, size_t pos, Assignment& a) {
  const size_t n = text.size();
  size_t p = pos;
  auto push = [&](char c, size_t raw, bool var = false) {
    a.cooked.push_back({c, raw, static_cast<int>(a.segs.size()), var});
  };
  while (p < n) {
    char c = text[p];
    if (c == '"') {
      Segment s{SegKind::dq, p, 0};
      ++p;
      for (;;) {
        if (p >= n) return Error{"unterminated double quote in the value at line " + std::to_string(a.line)};
        c = text[p];
        if (c == '"') {
          ++p;
          break;
        }
        if (c == '\\' && p + 1 < n) {
          char d = text[p + 1];
          if (d == '\n') {
            p += 2;
            continue;
          }
          if (d == '"' || d == '\\' || d == '$' || d == '`') {
            push(d, p + 1);
            p += 2;
            continue;
          }
        }
        if (c == '`' || (c == '$' && p + 1 < n && text[p + 1] == '(')) a.cmdsub = true;
        push(c, p, c == '$');
        ++p;
      }
      s.end = p;
      a.segs.push_back(s);
    } else if (c == '\'') {
      Segment s{SegKind::sq, p, 0};
      size_t close = text.find('\'', p + 1);
      if (close == std::string_view::npos)
        return Error{"unterminated single quote in the value at line " + std::to_string(a.line)};
      for (size_t i = p + 1; i < close; ++i) push(text[i], i);
      p = close + 1;
      s.end = p;
      a.segs.push_back(s);
    } else if (is_blank(c) || c == '\n' || c == '\r' || c == ';' || c == '&' || c == '|' || c == '<' || c == '>' ||
               c == '(' || c == ')') {
      break;
    } else {
      Segment s{SegKind::plain, p, 0};
      while (p < n) {
        c = text[p];
        if (c == '"' || c == '\'' || is_blank(c) || c == '\n' || c == '\r' || c == ';' || c == '&' || c == '|' ||
            c == '<' || c == '>' || c == '(' || c == ')')
          break;
        if (c == '\\' && p + 1 < n) {
          if (text[p + 1] != '\n') push(text[p + 1], p + 1);
          p += 2;
          continue;
        }
        if (c == '`' || (c == '$' && p + 1 < n && text[p + 1] == '(')) a.cmdsub = true;
        push(c, p, c == '$');
        ++p;
      }
      s.end = p;
      a.segs.push_back(s);
    }
  }
  return p;
}

void split_params(Assignment& a, std::string_view key) {
  const auto& ck = a.cooked;
  size_t i = 0;
  while (i < ck.size()) {
    while (i < ck.size() && (is_blank(ck[i].c) || ck[i].c == '\n')) ++i;
    if (i >= ck.size()) break;
    size_t j = i;
    Param p{"", ck[i].raw, 0, ck[i].seg, 0, false};
    while (j < ck.size() && !is_blank(ck[j].c) && ck[j].c != '\n') {
      p.text += ck[j].c;
      p.opaque = p.opaque || ck[j].var;
      ++j;
    }
    p.raw_end = ck[j - 1].raw + 1;
    p.last_seg = ck[j - 1].seg;
    if (p.opaque && refers_to(p.text, key)) a.self_ref = true;
    a.params.push_back(std::move(p));
    i = j;
  }
}

// Finds the key's assignments (every NAME=value statement is lexed, so a multi-line value of
// another variable cannot be mistaken for one) and the commented-out assignment lines.
Expected<Scan> scan(std::string_view text, std::string_view key) {
  Scan out;
  size_t pos = 0;
  const size_t n = text.size();
  LineCounter lines{text};
  auto next_line = [&](size_t from) {
    size_t nl = text.find('\n', from);
    return nl == std::string_view::npos ? n : nl + 1;
  };
  while (pos < n) {
    size_t p = pos;
    while (p < n && is_blank(text[p])) ++p;
    if (p < n && text[p] == '#') {
      size_t q = p + 1;
      while (q < n && is_blank(text[q])) ++q;
      if (text.substr(q, key.size()) == key && q + key.size() < n && text[q + key.size()] == '=')
        out.after_commented_line = next_line(p);
      pos = next_line(p);
      continue;
    }
    if (text.substr(p, 7) == "export " || text.substr(p, 7) == "export\t") {
      p += 7;
      while (p < n && is_blank(text[p])) ++p;
    }
    size_t name_end = p;
    if (name_end < n && ident_start(text[name_end])) {
      while (name_end < n && ident_char(text[name_end])) ++name_end;
    }
    if (name_end > p && name_end < n && text[name_end] == '=') {
      Assignment a;
      a.line = lines.at(p);
      a.value_begin = name_end + 1;
      auto end = lex_word(text, a.value_begin, a);
      if (!end) return Error{end.error()};
      a.value_end = *end;
      if (text.substr(p, name_end - p) == key) {
        split_params(a, key);
        out.assigns.push_back(std::move(a));
      }
      pos = next_line(std::max(*end, p));
      continue;
    }
    pos = next_line(p);
  }
  return out;
}

// The assignments that make up the key's final value: the last one, and those before it that it
// references with $KEY, in file order.
std::vector<size_t> contributing(const Scan& s) {
  std::vector<size_t> out;
  if (s.assigns.empty()) return out;
  size_t i = s.assigns.size() - 1;
  out.push_back(i);
  while (s.assigns[i].self_ref && i > 0) out.push_back(--i);
  std::reverse(out.begin(), out.end());
  return out;
}

struct ModelParam {
  std::string text;
  size_t assign = 0;            // index into Scan::assigns
  std::optional<size_t> param;  // index into its params; empty for an addition
  bool removed = false;
  std::optional<std::string> replacement;  // new text in place
  bool opaque = false;
  std::string current() const { return replacement ? *replacement : text; }
};

bool has_value(std::string_view p) { return p.find('=') != std::string_view::npos; }
std::string value_of(std::string_view p) {
  auto eq = p.find('=');
  return eq == std::string_view::npos ? "" : std::string(p.substr(eq + 1));
}
bool same_param(std::string_view a, std::string_view b) {
  return param_name(a) == param_name(b) && has_value(a) == has_value(b) && value_of(a) == value_of(b);
}
// The name of a parameter whose value is a variable, when the name itself is plain text.
std::optional<std::string> opaque_name(std::string_view p) {
  auto eq = p.find('=');
  if (eq == std::string_view::npos || p.substr(0, eq).find('$') != std::string_view::npos) return std::nullopt;
  return param_name(p);
}

struct RawEdit {
  size_t pos;
  std::string insert;
};

std::string render(std::string_view text, const std::vector<bool>& del, std::vector<RawEdit> inserts) {
  std::stable_sort(inserts.begin(), inserts.end(), [](const RawEdit& a, const RawEdit& b) { return a.pos < b.pos; });
  std::string out;
  out.reserve(text.size() + 64);
  size_t k = 0;
  for (size_t i = 0; i <= text.size(); ++i) {
    while (k < inserts.size() && inserts[k].pos == i) out += inserts[k++].insert;
    if (i < text.size() && !del[i]) out += text[i];
  }
  return out;
}

}  // namespace

bool bls_grub(const Facts& facts, std::string_view grub_default) {
  auto bls = grub_cmdline_params(grub_default, "GRUB_ENABLE_BLSCFG");
  return facts.boot.grubby && bls && !bls->empty() && bls->back() == "true";
}

std::vector<HandlerRequest> grub_handlers(const Facts& facts, std::string_view grub_default,
                                          const CmdlineEditResult& edit) {
  std::vector<HandlerRequest> out = {regenerate_grub_config()};
  if (bls_grub(facts, grub_default)) {
    std::vector<std::string> add = edit.added, remove = edit.removed;
    add.insert(add.end(), edit.replaced_new.begin(), edit.replaced_new.end());
    remove.insert(remove.end(), edit.replaced_old.begin(), edit.replaced_old.end());
    out.push_back(update_boot_entries(add, remove, edit.summary()));
  }
  return out;
}

bool valid_kernel_param(std::string_view p) {
  if (p.empty() || p.front() == '=') return false;
  return std::all_of(p.begin(), p.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("_.,:/+@%=~^[]-").find(c) != std::string_view::npos;
  });
}

std::string CmdlineEditResult::summary() const {
  auto list = [](const std::vector<std::string>& v) { return join(v, ", "); };
  std::string out;
  if (!added.empty()) out += "added " + list(added);
  if (!replaced.empty()) out += (out.empty() ? "" : "; ") + std::string("replaced ") + list(replaced);
  if (!removed.empty()) out += (out.empty() ? "" : "; ") + std::string("removed ") + list(removed);
  return out;
}

Expected<std::vector<std::string>> grub_cmdline_params(std::string_view text, std::string_view key) {
  auto s = scan(text, key);
  if (!s) return Error{s.error()};
  std::vector<std::string> out;
  for (size_t i : contributing(*s))
    for (const auto& p : s->assigns[i].params)
      if (!refers_to(p.text, key) || !p.opaque) out.push_back(p.text);
  return out;
}

std::optional<std::string> check_kernel_params(const nlohmann::json& list) {
  for (const auto& p : list) {
    const std::string s = p.get<std::string>();
    if (!valid_kernel_param(s))
      return "'" + s + "' is not a kernel parameter: letters, digits and _.,:/+@%=~^[]- only, no blanks or quotes";
  }
  return std::nullopt;
}

std::optional<std::string> check_present_absent(const CmdlineArgs& args) {
  for (const auto& s : args.absent)
    for (const auto& p : args.present)
      if (p == s || (s.find('=') == std::string::npos && param_name(p) == param_name(s)))
        return "'" + p + "' is both present and absent";
  return std::nullopt;
}

Expected<WantedCmdline> wanted_cmdline(const Facts& facts, const CmdlineArgs& args) {
  WantedCmdline w;
  w.present = args.present;
  w.absent = args.absent;
  std::string iommu = args.iommu;
  if (iommu == "auto") {
    iommu = facts.cpu.vendor;
    if (iommu != "intel" && iommu != "amd")
      return Error{"iommu: auto cannot tell the CPU vendor from /proc/cpuinfo (vendor_id '" + facts.cpu.vendor_id +
                   "'); set iommu: intel or amd"};
  }
  if (iommu == "intel") {
    w.present.insert(w.present.begin(), "intel_iommu=on");
    w.absent.push_back("iommu=off");
  } else if (iommu == "amd") {
    w.absent.push_back("amd_iommu=off");
    w.absent.push_back("iommu=off");
    w.note = " (the AMD IOMMU is on by default: nothing to add for it)";
  }
  return w;
}

Expected<GrubKeyValue> grub_key_value(std::string_view text, std::string_view key) {
  auto s = scan(text, key);
  if (!s) return Error{s.error()};
  GrubKeyValue out;
  const std::vector<size_t> chain = contributing(*s);
  if (chain.empty()) return out;
  out.assigned = true;
  out.inherits = s->assigns[chain.front()].self_ref;
  out.line = s->assigns[chain.back()].line;
  for (size_t i : chain)
    for (const auto& p : s->assigns[i].params)
      if (!refers_to(p.text, key) || !p.opaque) out.params.push_back(p.text);
  return out;
}

Expected<CmdlineEditResult> edit_grub_cmdline(std::string_view text, const CmdlineEdit& edit) {
  for (const auto& p : edit.present)
    if (!valid_kernel_param(p)) return Error{"'" + p + "' is not a kernel parameter this module writes"};
  for (const auto& p : edit.absent)
    if (!valid_kernel_param(p)) return Error{"'" + p + "' is not a kernel parameter this module writes"};

  // Bytes sh reads differently from what an editor shows: a NUL (a binary file, not shell), a
  // carriage return (DOS line ends: sh keeps it as part of the value on that line).
  if (size_t at = text.find_first_of(std::string_view("\0\r", 2)); at != std::string_view::npos) {
    LineCounter lines{text};
    const std::string line = "line " + std::to_string(lines.at(at));
    if (text[at] == '\0') return Error{line + ": a NUL byte: this is not a text file"};
    return Error{line +
                 (at + 1 < text.size() && text[at + 1] == '\n' ? " ends in a carriage return (CRLF)"
                                                               : " has a carriage return") +
                 ": sh would read it as part of the value; convert the file to Unix line ends (dos2unix)"};
  }

  auto s = scan(text, edit.key);
  if (!s) return Error{s.error()};
  const std::vector<size_t> chain = contributing(*s);
  for (size_t i : chain) {
    if (s->assigns[i].cmdsub)
      return Error{edit.key + " at line " + std::to_string(s->assigns[i].line) +
                   " runs a command ($(...) or backticks): gptagent edits values, not shell programs"};
  }

  std::vector<ModelParam> model;
  for (size_t i : chain) {
    const auto& a = s->assigns[i];
    for (size_t k = 0; k < a.params.size(); ++k) {
      if (a.params[k].opaque && refers_to(a.params[k].text, edit.key)) continue;
      model.push_back({a.params[k].text, i, k, false, std::nullopt, a.params[k].opaque});
    }
  }
  CmdlineEditResult res;
  auto conflict_with_opaque = [&](std::string_view entry) -> std::optional<std::string> {
    for (const auto& m : model)
      if (m.opaque && !m.removed && opaque_name(m.text) == param_name(entry))
        return edit.key + " holds " + m.text + ", whose value comes from a shell variable: cannot tell whether it is " +
               std::string(entry) + "; edit that line by hand";
    return std::nullopt;
  };

  for (const auto& entry : edit.absent) {
    if (auto msg = conflict_with_opaque(entry)) return Error{*msg};
    for (auto& m : model) {
      if (m.removed || m.opaque) continue;
      bool match = has_value(entry) ? same_param(m.current(), entry) : param_name(m.current()) == param_name(entry);
      if (!match) continue;
      m.removed = true;
      res.removed.push_back(m.current());
    }
  }
  for (const auto& entry : edit.present) {
    if (auto msg = conflict_with_opaque(entry)) return Error{*msg};
    std::vector<ModelParam*> same_name;
    for (auto& m : model)
      if (!m.removed && !m.opaque && param_name(m.current()) == param_name(entry)) same_name.push_back(&m);
    if (!has_value(entry)) {
      // A bare flag: present when it is there as written.
      bool there = std::any_of(same_name.begin(), same_name.end(),
                               [&](ModelParam* m) { return same_param(m->current(), entry); });
      if (!there) {
        model.push_back({entry, chain.empty() ? 0 : chain.back(), std::nullopt, false, std::nullopt, false});
        res.added.push_back(entry);
      }
      continue;
    }
    if (same_name.empty()) {
      model.push_back({entry, chain.empty() ? 0 : chain.back(), std::nullopt, false, std::nullopt, false});
      res.added.push_back(entry);
      continue;
    }
    // The first one takes the value in place; later ones with another value would override it
    // (the kernel reads the command line left to right), so they go.
    ModelParam* first = same_name.front();
    if (!same_param(first->current(), entry)) {
      res.replaced.push_back(first->current() + " with " + entry);
      res.replaced_old.push_back(first->current());
      res.replaced_new.push_back(entry);
      if (first->param)
        first->replacement = entry;
      else
        first->text = entry;
    }
    for (size_t k = 1; k < same_name.size(); ++k) {
      if (same_param(same_name[k]->current(), entry)) continue;
      same_name[k]->removed = true;
      res.removed.push_back(same_name[k]->current());
    }
  }
  // An addition that was later removed again in the same edit is no addition at all.
  model.erase(std::remove_if(model.begin(), model.end(), [](const ModelParam& m) { return !m.param && m.removed; }),
              model.end());

  if (!res.changed()) {
    res.text = std::string(text);
    return res;
  }

  // Pass 1: removals and in-place replacements on the existing assignments. Blanks next to a
  // removed parameter go with it; replaced text stays a word boundary.
  enum : char { keep = 0, removed = 1, replaced = 2 };
  std::vector<char> state(text.size(), keep);
  std::vector<RawEdit> inserts;
  for (const auto& m : model) {
    if (!m.param || (!m.removed && !m.replacement)) continue;
    const Assignment& a = s->assigns[m.assign];
    const Param& p = a.params[*m.param];
    if (p.first_seg != p.last_seg)
      return Error{"cannot edit " + p.text + " at line " + std::to_string(a.line) +
                   ": it spans several quoted parts of the value"};
    for (size_t i = p.raw_begin; i < p.raw_end; ++i) state[i] = m.replacement ? replaced : removed;
    if (m.replacement) {
      inserts.push_back({p.raw_begin, *m.replacement});
      continue;
    }
    // Take the blanks before it with it, or after it when it is the first of its part.
    bool took = false;
    for (size_t r = p.raw_begin; r > a.value_begin; --r) {
      if (state[r - 1] == removed) continue;
      if (state[r - 1] == replaced || !is_blank(text[r - 1])) break;
      state[r - 1] = removed;
      took = true;
    }
    if (!took) {
      for (size_t r = p.raw_end; r < a.value_end; ++r) {
        if (state[r] == removed) continue;
        if (state[r] == replaced || !is_blank(text[r])) break;
        state[r] = removed;
      }
    }
  }
  std::vector<bool> del(text.size());
  for (size_t i = 0; i < text.size(); ++i) del[i] = state[i] != keep;
  std::string pass1 = render(text, del, inserts);

  // Pass 2: additions, at the end of the last assignment of the text as it now is.
  std::vector<std::string> additions;
  for (const auto& m : model)
    if (!m.param && !m.removed) additions.push_back(m.text);
  if (additions.empty()) {
    res.text = std::move(pass1);
    return res;
  }
  const std::string joined = join(additions, " ");

  auto s2 = scan(pass1, edit.key);
  if (!s2) return Error{s2.error()};
  std::vector<RawEdit> adds;
  if (s2->assigns.empty()) {
    std::string line = edit.key + "=\"" + joined + "\"\n";
    size_t at = s2->after_commented_line.value_or(pass1.size());
    if (at == pass1.size() && !pass1.empty() && pass1.back() != '\n') line = "\n" + line;
    adds.push_back({at, line});
  } else {
    const Assignment& last = s2->assigns.back();
    bool ends_blank = last.cooked.empty() || is_blank(last.cooked.back().c) || last.cooked.back().c == '\n';
    const std::string sep = ends_blank ? "" : " ";
    bool all_plain =
        std::all_of(last.segs.begin(), last.segs.end(), [](const Segment& g) { return g.kind == SegKind::plain; });
    std::string_view raw = std::string_view(pass1).substr(last.value_begin, last.value_end - last.value_begin);
    if (all_plain && raw.find('\\') == std::string_view::npos) {
      adds.push_back({last.value_begin, "\""});
      adds.push_back({last.value_end, sep + joined + "\""});
    } else if (last.segs.back().kind == SegKind::plain) {
      adds.push_back({last.value_end, "\"" + sep + joined + "\""});
    } else {
      adds.push_back({last.segs.back().end - 1, sep + joined});
    }
  }
  res.text = render(pass1, std::vector<bool>(pass1.size(), false), adds);
  return res;
}

}  // namespace gpt
