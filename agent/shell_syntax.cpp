#include "agent/shell_syntax.hpp"

#include <array>
#include <cstring>
#include <memory>
#include <vector>

namespace gpt {
namespace {

// The checker follows the structure of dash's parser (parser.c: a tokenizer reading one character
// at a time with one or two characters of push-back, and a recursive-descent parser over its
// tokens) because its verdicts, and the line of its errors, are what the tests compare with
// `sh -n`: dash's quirks are kept on purpose (a character after `${name` that is no operator is
// dropped, only the start of a `...` substitution is parsed, lines inside one count from 1).
// bash's additions are marked `bash()`.

constexpr int kEof = -1;
// Nesting no configuration file reaches: a deeper one is refused rather than exhausting the stack.
constexpr int kMaxDepth = 500;

// clang-format off
enum Token : int {
  TEOF, TNL, TSEMI, TBACKGND, TAND, TOR, TPIPE, TLP, TRP, TENDCASE, TREDIR, TWORD,
  TNOT, TCASE, TDO, TDONE, TELIF, TELSE, TESAC, TFI, TFOR, TIF, TIN, TTHEN, TUNTIL, TWHILE, TBEGIN, TEND,
  TDBRACKET, TDBRACKETEND, TFUNCTION, TSELECT, TTIME,  // bash
};

constexpr const char* kTokenNames[] = {
    "end of file", "newline", "\";\"", "\"&\"", "\"&&\"", "\"||\"", "\"|\"", "\"(\"", "\")\"", "\";;\"", "redirection",
    "word", "\"!\"", "\"case\"", "\"do\"", "\"done\"", "\"elif\"", "\"else\"", "\"esac\"", "\"fi\"", "\"for\"",
    "\"if\"", "\"in\"", "\"then\"", "\"until\"", "\"while\"", "\"{\"", "\"}\"", "\"[[\"", "\"]]\"", "\"function\"",
    "\"select\"", "\"time\""};

struct Keyword {
  std::string_view text;
  Token token;
  bool bash_only;
};
constexpr Keyword kKeywords[] = {
    {"!", TNOT, false},     {"case", TCASE, false}, {"do", TDO, false},     {"done", TDONE, false},
    {"elif", TELIF, false}, {"else", TELSE, false}, {"esac", TESAC, false}, {"fi", TFI, false},
    {"for", TFOR, false},   {"if", TIF, false},     {"in", TIN, false},     {"then", TTHEN, false},
    {"until", TUNTIL, false}, {"while", TWHILE, false}, {"{", TBEGIN, false}, {"}", TEND, false},
    {"[[", TDBRACKET, true}, {"]]", TDBRACKETEND, true}, {"function", TFUNCTION, true}, {"select", TSELECT, true},
    {"time", TTIME, true},
};

// dash's special built-ins (and `local`): no function may take their names.
constexpr std::string_view kSpecialBuiltins[] = {"break", "continue", "eval", "exec", "exit", "export", "readonly",
                                                 "return", "set", "shift", "times", "trap", "unset", "local"};
constexpr std::string_view kDeclarationBuiltins[] = {"declare", "typeset", "local", "export", "readonly"};

// The tokens that end a list (dash's tokendlist).
bool ends_list(int t) {
  switch (t) {
    case TEOF: case TRP: case TENDCASE: case TDO: case TDONE: case TELIF: case TELSE: case TESAC: case TFI:
    case TTHEN: case TEND:
      return true;
    default:
      return false;
  }
}
// clang-format on

// What a readtoken() call recognises besides plain words (dash's checkkwd).
enum : int {
  kChkKwd = 1,      // reserved words
  kChkNl = 2,       // newlines are skipped
  kChkEofMark = 4,  // a here-document's delimiter: $ and ` are plain characters (to dash)
  kChkAssign = 8,   // bash: an assignment may take an array, NAME=(...)
};

enum class Syntax { base, dq, sq, arith };
enum class Cls { word, nl, back, squote, dquote, endquote, bquote, var, endvar, lp, rp, eof, spcl, ign };

Cls classify(Syntax s, int c) {
  if (c == kEof) return Cls::eof;
  if (c == '\n') return Cls::nl;
  switch (s) {
    case Syntax::base:
      switch (c) {
        case '\\':
          return Cls::back;
        case '\'':
          return Cls::squote;
        case '"':
          return Cls::dquote;
        case '`':
          return Cls::bquote;
        case '$':
          return Cls::var;
        case '}':
          return Cls::endvar;
        case '<':
        case '>':
        case '(':
        case ')':
        case ';':
        case '&':
        case '|':
        case ' ':
        case '\t':
          return Cls::spcl;
        default:
          return Cls::word;
      }
    case Syntax::dq:
      switch (c) {
        case '\\':
          return Cls::back;
        case '"':
          return Cls::endquote;
        case '`':
          return Cls::bquote;
        case '$':
          return Cls::var;
        case '}':
          return Cls::endvar;
        default:
          return Cls::word;
      }
    case Syntax::sq:
      return c == '\'' ? Cls::endquote : Cls::word;
    case Syntax::arith:
      switch (c) {
        case '\\':
          return Cls::back;
        case '`':
          return Cls::bquote;
        case '"':
          return Cls::ign;
        case '$':
          return Cls::var;
        case '}':
          return Cls::endvar;
        case '(':
          return Cls::lp;
        case ')':
          return Cls::rp;
        default:
          return Cls::word;
      }
  }
  return Cls::word;
}

bool is_name_start(int c) { return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(int c) { return c >= '0' && c <= '9'; }
bool is_name_char(int c) { return is_name_start(c) || is_digit(c); }
bool is_special_param(int c) { return is_digit(c) || (c > 0 && std::strchr("#?$!-*@", c) != nullptr); }

// A word as the parser needs it: its characters, with marks where dash puts control bytes
// (quoting and expansions), which make a word no keyword, name or assignment.
constexpr int kQuoteMark = 0x100, kEscapeMark = 0x101, kExpansionMark = 0x102;
using Word = std::vector<int>;

std::string plain_text(const Word& w) {
  std::string s;
  for (int c : w)
    if (c < 0x100) s += static_cast<char>(c);
  return s;
}
bool has_marks(const Word& w) {
  for (int c : w)
    if (c >= 0x100) return true;
  return false;
}
bool is_name(const Word& w) {
  if (w.empty() || !is_name_start(w[0])) return false;
  for (int c : w)
    if (!is_name_char(c)) return false;
  return true;
}

// ${...} subtypes, numbered as dash numbers them: a `:` and an operator add up to one. Any but
// VSNORMAL (a plain $name or ${name}) waits for its `}`.
enum : int { VSNORMAL = 0x1, VSTRIMRIGHT = 0x6, VSTRIMLEFT = 0x8, VSLENGTH = 0xa, VSNUL = 0x10 };

// One level of dash's syntax stack: a quoting context and the ${ and $(( opened in it.
struct Level {
  Syntax syntax = Syntax::base;
  bool innerdq = false, varpushed = false, dblquote = false;
  int varnest = 0, parenlevel = 0, dqvarnest = 0;
  int quote_line = 0, open_line = 0;  // for messages: where the quote, or the $(( or ${, began
};

struct Heredoc {
  std::string mark;
  bool quoted = false, strip_tabs = false;
};

// The parse stops at the first error, as dash's does (it longjmps out of its parser): there is no
// partial result to keep, so the error unwinds the recursion as an exception, caught by
// find_shell_syntax_error.
struct Failure {
  int line;
  std::string message;
};

class Parser {
 public:
  Parser(std::string_view text, ShellDialect dialect) : dialect_(dialect) {
    inputs_.emplace_back();
    inputs_.back().chunks.push_back({nullptr, text, 0});
  }

  void parse_file() {
    for (;;) {
      tokpushback_ = false;
      checkkwd_ = 0;
      heredocs_.clear();
      list(1);
      if (lasttoken_ == TEOF) return;
    }
  }

 private:
  // ---- input: dash's pgetc/pungetc over the file, or over the text of a `...` substitution ----

  struct Chunk {
    std::shared_ptr<const std::string> owned;
    std::string_view text;
    size_t pos = 0;
  };
  // A file, or the text of a `...` substitution, which dash parses as an input of its own
  // (counting its lines from 1); pushed-back text is read before the rest.
  struct Input {
    std::vector<Chunk> chunks;
    std::array<int, 2> last{kEof, kEof};
    int unget = 0;
    int line = 1;
  };
  std::vector<Input> inputs_;

  int& line() { return inputs_.back().line; }

  int pgetc() {
    Input& in = inputs_.back();
    if (in.unget > 0) return in.last[static_cast<size_t>(--in.unget)];
    int c = kEof;
    while (!in.chunks.empty()) {
      Chunk& ch = in.chunks.back();
      if (ch.pos < ch.text.size()) {
        c = static_cast<unsigned char>(ch.text[ch.pos++]);
        if (c == 0) {  // dash drops NUL bytes
          c = kEof;
          continue;
        }
        break;
      }
      if (in.chunks.size() == 1) break;
      in.chunks.pop_back();
    }
    in.last[1] = in.last[0];
    in.last[0] = c;
    return c;
  }
  void pungetc() {
    Input& in = inputs_.back();
    if (in.unget < 2) ++in.unget;
  }
  // A backslash-newline is removed everywhere but in single quotes and comments (and bash drops
  // a backslash that ends the file).
  int pgetc_eatbnl() {
    int c;
    while ((c = pgetc()) == '\\') {
      const int next = pgetc();
      if (bash() && next == kEof) return kEof;
      if (next != '\n') {
        pungetc();
        break;
      }
      ++line();
    }
    return c;
  }
  int pgetc_in(Syntax s) { return s == Syntax::sq ? pgetc() : pgetc_eatbnl(); }
  void push_string(std::string s) {
    auto owned = std::make_shared<const std::string>(std::move(s));
    std::string_view view = *owned;
    inputs_.back().chunks.push_back({std::move(owned), view, 0});
  }

  // ---- errors ----

  [[noreturn]] void fail(std::string message) { throw Failure{line(), std::move(message)}; }
  // dash's synexpect(): "X unexpected", "(expecting Y)"; at the end of the file, which construct
  // is left open.
  [[noreturn]] void unexpected(int expected = -1, std::string_view opener = {}, int opener_line = 0) {
    std::string m = std::string(kTokenNames[lasttoken_]) + " unexpected";
    if (expected >= 0) m += std::string(" (expecting ") + kTokenNames[expected] + ")";
    if (lasttoken_ == TEOF && !opener.empty())
      m += ": the " + std::string(opener) + " at line " + std::to_string(opener_line) + " is not closed";
    fail(std::move(m));
  }
  struct Nest {
    Parser& p;
    explicit Nest(Parser& parser) : p(parser) {
      if (++p.depth_ > kMaxDepth) p.fail("nested more than " + std::to_string(kMaxDepth) + " levels deep");
    }
    ~Nest() { --p.depth_; }
    Nest(const Nest&) = delete;
    Nest& operator=(const Nest&) = delete;
  };

  bool bash() const { return dialect_ == ShellDialect::bash; }

  // ---- tokens ----

  int readtoken() {
    const int kwd = checkkwd_;
    int t = xxreadtoken();
    if (kwd & kChkNl) {
      while (t == TNL) {
        parse_heredocs();
        t = xxreadtoken();
      }
    }
    if (t == TWORD && !quoteflag_ && (kwd & kChkKwd) && !has_marks(word_)) {
      const std::string text = plain_text(word_);
      for (const auto& k : kKeywords)
        if (k.text == text && (!k.bash_only || bash())) {
          lasttoken_ = t = k.token;
          break;
        }
    }
    checkkwd_ = 0;
    return t;
  }

  int xxreadtoken() {
    if (tokpushback_) {
      tokpushback_ = false;
      return lasttoken_;
    }
    for (;;) {
      int c = pgetc_eatbnl();
      switch (c) {
        case ' ':
        case '\t':
          continue;
        case '#':
          while ((c = pgetc()) != '\n' && c != kEof) {
          }
          pungetc();
          continue;
        case '\n':
          ++line();
          return lasttoken_ = TNL;
        case kEof:
          return lasttoken_ = TEOF;
        case '&':
          c = pgetc_eatbnl();
          if (c == '&') return lasttoken_ = TAND;
          if (bash() && c == '>') {  // &> and &>>
            if (pgetc_eatbnl() != '>') pungetc();
            redir_heredoc_ = false;
            return lasttoken_ = TREDIR;
          }
          pungetc();
          return lasttoken_ = TBACKGND;
        case '|':
          c = pgetc_eatbnl();
          if (c == '|') return lasttoken_ = TOR;
          if (!(bash() && c == '&')) pungetc();  // bash's |&
          return lasttoken_ = TPIPE;
        case ';':
          c = pgetc_eatbnl();
          if (c == ';') {
            if (bash() && pgetc_eatbnl() != '&') pungetc();  // bash's ;;&
            return lasttoken_ = TENDCASE;
          }
          if (bash() && c == '&') return lasttoken_ = TENDCASE;  // bash's ;&
          pungetc();
          return lasttoken_ = TSEMI;
        case '(':
          return lasttoken_ = TLP;
        case ')':
          return lasttoken_ = TRP;
      }
      return read_word(c);
    }
  }

  // ---- words (dash's readtoken1) ----

  struct WordState {
    std::vector<Level> st;
    Word out;
    int quotef = 0;
    const Heredoc* here = nullptr;  // reading a here-document's body: no word, no error for quotes
    int kwd = 0;                    // checkkwd_ when the word began
  };

  // `in_cond`: a word of bash's [[ ]], where < and > compare and do not redirect.
  int read_word(int c, bool in_cond = false) {
    WordState ws;
    ws.st.emplace_back();
    ws.kwd = checkkwd_;
    for (;;) {
      c = scan_word(c, ws);
      if (bash() && c == '(' && ws.quotef == 0 && (ws.kwd & (kChkKwd | kChkAssign)) && array_assignment(ws.out)) {
        read_array();
        c = pgetc_eatbnl();
        continue;
      }
      if (bash() && (c == '<' || c == '>') && ws.out.empty() && ws.quotef == 0 && !in_cond) {
        if (pgetc() == '(') {  // a process substitution, <(...) or >(...)
          command_substitution(ws, line());
          c = pgetc_eatbnl();
          continue;
        }
        pungetc();
      }
      break;
    }
    if ((c == '>' || c == '<') && ws.quotef == 0 && ws.out.size() <= 1 && (ws.out.empty() || is_digit(ws.out[0])) &&
        !in_cond) {
      read_redirection(c);
      return lasttoken_ = TREDIR;
    }
    pungetc();
    quoteflag_ = ws.quotef > 0;
    word_ = std::move(ws.out);
    return lasttoken_ = TWORD;
  }

  void read_heredoc_body(const Heredoc& h) {
    WordState ws;
    ws.st.emplace_back();
    ws.here = &h;
    ws.kwd = checkkwd_;
    if (h.quoted || bash()) {  // bash expands an unquoted body when it runs it, and parses nothing in it before
      ws.st[0].syntax = Syntax::sq;
      scan_word(pgetc(), ws);
    } else {
      ws.st[0].syntax = Syntax::dq;
      ws.st[0].dblquote = true;
      scan_word(pgetc_eatbnl(), ws);
    }
  }

  // Reads a word from its first character `c` to the character that ends it, which it returns.
  int scan_word(int c, WordState& ws) {
    Nest nest(*this);
    bool line_start = true;
    for (;;) {
      if (line_start && ws.here) c = heredoc_end(c, *ws.here);
      line_start = false;
      Level& top = ws.st.back();
      switch (classify(top.syntax, c)) {
        case Cls::nl:
          if (top.syntax == Syntax::base && top.varnest == 0) return end_word(c, ws);
          ws.out.push_back(c);
          ++line();
          c = pgetc_in(ws.st.back().syntax);
          line_start = true;
          continue;
        case Cls::word:
          if (bash() && c == '[' && top.syntax == Syntax::base && top.varnest == 0 &&
              (ws.kwd & (kChkKwd | kChkAssign)) && is_name(ws.out)) {
            bash_skip_to('[', ']', line());  // NAME[subscript]: bash reads to the `]`, across blanks
            ws.out.push_back('[');
            c = ']';
          }
          ws.out.push_back(c);
          break;
        case Cls::back: {
          const int e = pgetc();
          if (e == kEof) {
            ws.out.push_back('\\');
            pungetc();
            break;
          }
          if (top.dblquote && e != '\\' && e != '`' && e != '$' && (e != '"' || (ws.here && !top.varnest)) &&
              (e != '}' || !top.varnest)) {
            ws.out.push_back(kEscapeMark);
            ws.out.push_back('\\');
          }
          ws.out.push_back(kEscapeMark);
          ws.out.push_back(e);
          ++ws.quotef;
          break;
        }
        case Cls::squote:
          top.syntax = Syntax::sq;
          top.quote_line = line();
          if (!ws.here) ws.out.push_back(kQuoteMark);
          break;
        case Cls::dquote:
          top.syntax = Syntax::dq;
          top.dblquote = true;
          top.quote_line = line();
          if (top.varnest) top.innerdq = !top.innerdq;
          if (!ws.here) ws.out.push_back(kQuoteMark);
          break;
        case Cls::endquote:
          if (ws.here && !top.varnest) {
            ws.out.push_back(c);
            break;
          }
          if (top.dqvarnest == 0) {
            top.syntax = Syntax::base;
            top.dblquote = false;
          }
          ++ws.quotef;
          if (c == '"' && top.varnest) top.innerdq = !top.innerdq;
          if (!ws.here) ws.out.push_back(kQuoteMark);
          break;
        case Cls::var:
          substitution(ws);
          break;
        case Cls::endvar:
          if (!top.innerdq && top.varnest > 0) {
            if (--top.varnest == 0 && top.varpushed && ws.st.size() > 1)
              ws.st.pop_back();
            else if (top.dqvarnest > 0)
              --top.dqvarnest;
            ws.out.push_back(kExpansionMark);
          } else {
            ws.out.push_back(c);
          }
          break;
        case Cls::lp:
          ++top.parenlevel;
          ws.out.push_back(c);
          break;
        case Cls::rp:
          if (top.parenlevel > 0) {
            ws.out.push_back(c);
            --top.parenlevel;
          } else if (pgetc_eatbnl() == ')') {
            ws.out.push_back(kExpansionMark);
            if (ws.st.size() > 1) ws.st.pop_back();
          } else {
            pungetc();
            ws.out.push_back(')');
          }
          break;
        case Cls::bquote:
          if ((ws.kwd & kChkEofMark) && !bash()) {
            ws.out.push_back('`');
            break;
          }
          backquote(ws);
          break;
        case Cls::eof:
          return end_word(c, ws);
        case Cls::ign:
          break;
        case Cls::spcl:
          if (top.varnest == 0) return end_word(c, ws);
          ws.out.push_back(c);
          break;
      }
      c = pgetc_in(ws.st.back().syntax);
    }
  }

  int end_word(int c, const WordState& ws) {
    const Level& top = ws.st.back();
    if (top.syntax == Syntax::arith)
      fail("missing '))': the $(( at line " + std::to_string(top.open_line) + " is not closed");
    if (top.syntax != Syntax::base && !ws.here) {
      const char* q = top.syntax == Syntax::sq ? "'" : "\"";
      fail(std::string("unterminated quoted string: the ") + q + " at line " + std::to_string(top.quote_line) +
           " is not closed");
    }
    if (top.varnest != 0) fail("missing '}': the ${ at line " + std::to_string(top.open_line) + " is not closed");
    return c;
  }

  // At the start of each line of a here-document: whether the line is its delimiter (then the end
  // of the body, kEof, is returned); if not, what was read for the comparison is read again.
  int heredoc_end(int c, const Heredoc& h) {
    if (h.strip_tabs)
      while (c == '\t') c = pgetc();
    std::vector<int> seen;
    bool mismatch = false;
    for (size_t i = 0;; ++i) {
      seen.push_back(c);
      if (i == h.mark.size()) break;
      if (c != static_cast<unsigned char>(h.mark[i])) {
        mismatch = true;
        break;
      }
      c = pgetc();
    }
    if (!mismatch && (c == '\n' || c == kEof)) {
      ++line();
      return kEof;
    }
    std::string again;
    for (size_t i = 1; i < seen.size(); ++i)
      if (seen[i] != kEof) again += static_cast<char>(seen[i]);
    if (!again.empty()) push_string(std::move(again));
    return seen[0];
  }

  // After a '$' (dash's parsesub). A character after `${name` that is no operator is dropped, as
  // dash drops it: `${x"}` is a whole substitution to dash, and bash's parse is taken in bash().
  void substitution(WordState& ws) {
    const int start = line();
    int c = pgetc_eatbnl();
    if (bash() && c == '\'' && ws.st.back().syntax == Syntax::base && !(ws.kwd & kChkEofMark)) {
      ansi_c_string(start);
      ++ws.quotef;
      return;
    }
    if (((ws.kwd & kChkEofMark) && !bash()) || (c != '(' && c != '{' && !is_name_start(c) && !is_special_param(c))) {
      ws.out.push_back('$');
      pungetc();
      return;
    }
    if (c == '(') {
      if (pgetc_eatbnl() == '(') {
        if (bash()) {
          bash_arithmetic(ws, start);
          return;
        }
        Level l;
        l.syntax = Syntax::arith;
        l.dblquote = true;
        l.open_line = start;
        ws.st.push_back(l);
        ws.out.push_back(kExpansionMark);
      } else {
        pungetc();
        command_substitution(ws, start);
      }
      return;
    }
    ws.out.push_back(kExpansionMark);
    if (c == '{' && bash()) {
      bash_skip_to('{', '}', start);
      return;
    }
    Syntax newsyn = ws.st.back().syntax;
    int subtype = VSNORMAL;
    if (c == '{') {
      c = pgetc_eatbnl();
      subtype = 0;
    }
    bool badsub = false;
    for (;;) {
      if (is_name_start(c)) {
        do {
          c = pgetc_eatbnl();
        } while (is_name_char(c));
      } else if (is_digit(c)) {
        do {
          c = pgetc_eatbnl();
        } while (is_digit(c));
      } else if (c != '}') {
        int cc = c;
        c = pgetc_eatbnl();
        if (!subtype && cc == '#') {
          subtype = VSLENGTH;
          if (is_name_char(c)) continue;  // ${#name}
          cc = c;
          c = pgetc_eatbnl();
          if (cc == '}' || c != '}') {
            pungetc();
            subtype = 0;
            c = cc;
            cc = '#';
          }
        }
        if (!is_special_param(cc)) {
          if (subtype == VSLENGTH) subtype = 0;
          badsub = true;
        }
      } else {
        badsub = true;
      }
      break;
    }
    if (!badsub && subtype == 0) {
      const int cc = c;
      if (c == ':') {
        subtype = VSNUL;
        c = pgetc_eatbnl();
      }
      if (cc != ':' && (c == '%' || c == '#')) {
        subtype = c == '#' ? VSTRIMLEFT : VSTRIMRIGHT;
        c = pgetc_eatbnl();
        if (c == cc)
          ++subtype;
        else
          pungetc();
        newsyn = Syntax::base;
      } else if (c > 0 && std::strchr("}-+?=", c) != nullptr) {
        subtype |= static_cast<int>(std::strchr("}-+?=", c) - "}-+?=") + VSNORMAL;
      }
      // Anything else after the name is dropped, as dash drops it.
    } else {
      pungetc();
    }
    if (newsyn == Syntax::arith) newsyn = Syntax::dq;
    if ((newsyn != ws.st.back().syntax || ws.st.back().innerdq) && subtype != VSNORMAL) {
      Level l;
      l.syntax = newsyn;
      l.varpushed = true;
      l.dblquote = newsyn != Syntax::base;
      l.quote_line = start;
      ws.st.push_back(l);
    }
    if (subtype != VSNORMAL) {
      Level& top = ws.st.back();
      if (top.varnest++ == 0) top.open_line = start;
      if (top.dblquote) ++top.dqvarnest;
    }
  }

  // $(...): a list of commands up to the `)`. Here-documents begun inside and not read there get
  // no body (dash reads them from an empty string).
  void command_substitution(WordState& ws, int start) {
    Nest nest(*this);
    std::vector<Heredoc> outer;
    outer.swap(heredocs_);
    list(2);
    if (readtoken() != TRP) unexpected(TRP, "$(", start);
    heredocs_ = std::move(outer);
    ws.out.push_back(kExpansionMark);
  }

  // `...`: dash reads the text to the closing backquote (a backslash quotes \, `, $, and " inside
  // double quotes), then parses it as an input of its own, only up to the first token that ends a
  // list; bash does not parse it before running it.
  void backquote(WordState& ws) {
    const int start = line();
    auto unclosed = [&] {
      fail("end of file in a `...` command substitution: the ` at line " + std::to_string(start) + " is not closed");
    };
    ws.out.push_back(kExpansionMark);
    if (bash()) {
      for (int c = pgetc(); c != '`'; c = pgetc()) {
        if (c == '\\') c = pgetc();
        if (c == kEof) unclosed();
        if (c == '\n') ++line();
      }
      return;
    }
    std::string text;
    for (;;) {
      int c = pgetc_eatbnl();
      if (c == '`') break;
      if (c == '\\') {
        c = pgetc_eatbnl();
        if (c != '\\' && c != '`' && c != '$' && (!ws.st.back().dblquote || c != '"')) text += '\\';
      } else if (c == '\n') {
        ++line();
      }
      if (c == kEof) unclosed();
      text += static_cast<char>(c);
    }
    Nest nest(*this);
    std::vector<Heredoc> outer;
    outer.swap(heredocs_);
    inputs_.emplace_back();
    push_string(std::move(text));
    list(2);
    inputs_.pop_back();
    heredocs_ = std::move(outer);
    tokpushback_ = false;
  }

  // ---- redirections ----

  void read_redirection(int c) {
    redir_heredoc_ = false;
    if (c == '>') {
      c = pgetc_eatbnl();
      if (c != '>' && c != '|' && c != '&') pungetc();
      return;
    }
    c = pgetc_eatbnl();
    if (c == '<') {
      c = pgetc_eatbnl();
      if (bash() && c == '<') return;  // a here-string: a plain word follows
      redir_heredoc_ = true;
      redir_strip_tabs_ = c == '-';
      if (c != '-') pungetc();
    } else if (c != '&' && c != '>') {
      pungetc();
    }
  }

  void parse_fname() {
    const bool heredoc = redir_heredoc_;
    const bool strip = redir_strip_tabs_;
    if (heredoc) checkkwd_ = kChkEofMark;
    if (readtoken() != TWORD) unexpected();
    if (heredoc) heredocs_.push_back({plain_text(word_), quoteflag_, strip});
  }

  void parse_heredocs() {
    std::vector<Heredoc> pending;
    pending.swap(heredocs_);
    for (const auto& h : pending) read_heredoc_body(h);
  }

  // ---- the grammar ----

  void list(int nlflag) {
    Nest nest(*this);
    const int chknl = (nlflag & 1) ? 0 : kChkNl;
    for (;;) {
      checkkwd_ = chknl | kChkKwd;
      int tok = readtoken();
      if (tok == TNL) {
        parse_heredocs();
        return;
      }
      if (tok == TEOF) return at_eof();
      tokpushback_ = true;
      if (nlflag == 2 && ends_list(tok)) return;
      nlflag |= 2;
      andor();
      tok = readtoken();
      switch (tok) {
        case TEOF:
          return at_eof();
        case TNL:
          parse_heredocs();
          if (!chknl) return;
          break;
        case TBACKGND:
        case TSEMI:
          break;
        default:
          if (!chknl) unexpected();
          tokpushback_ = true;
          return;
      }
    }
  }
  void at_eof() {
    parse_heredocs();
    tokpushback_ = true;
    lasttoken_ = TEOF;
  }

  void andor() {
    pipeline();
    for (;;) {
      const int t = readtoken();
      if (t != TAND && t != TOR) {
        tokpushback_ = true;
        return;
      }
      checkkwd_ = kChkNl | kChkKwd;
      pipeline();
    }
  }

  void pipeline() {
    int t = readtoken();
    if (bash()) {
      // Any number of `!` and `time [-p]`, and then maybe no command at all.
      bool prefix = false;
      for (;; prefix = true) {
        if (t != TNOT && t != TTIME) break;
        const bool time = t == TTIME;
        checkkwd_ = kChkKwd;
        t = readtoken();
        if (time && t == TWORD && !quoteflag_ && plain_text(word_) == "-p") {
          checkkwd_ = kChkKwd;
          t = readtoken();
        }
      }
      tokpushback_ = true;
      if (prefix && (t == TNL || t == TSEMI || t == TEOF || t == TBACKGND)) return;
    } else if (t == TNOT) {
      checkkwd_ = kChkKwd;
    } else {
      tokpushback_ = true;
    }
    command();
    if (readtoken() == TPIPE) {
      do {
        checkkwd_ = kChkNl | kChkKwd;
        command();
      } while (readtoken() == TPIPE);
    }
    tokpushback_ = true;
  }

  void command() {
    Nest nest(*this);
    const int start = line();
    int close = -1;
    const char* opener = "";
    switch (readtoken()) {
      default:
        unexpected();
      case TIF:
        list(0);
        if (readtoken() != TTHEN) unexpected(TTHEN, "\"if\"", start);
        list(0);
        while (readtoken() == TELIF) {
          list(0);
          if (readtoken() != TTHEN) unexpected(TTHEN, "\"if\"", start);
          list(0);
        }
        if (lasttoken_ == TELSE)
          list(0);
        else
          tokpushback_ = true;
        close = TFI;
        opener = "\"if\"";
        break;
      case TWHILE:
      case TUNTIL:
        opener = lasttoken_ == TWHILE ? "\"while\"" : "\"until\"";
        list(0);
        if (readtoken() != TDO) unexpected(TDO, opener, start);
        list(0);
        close = TDONE;
        break;
      case TFOR:
      case TSELECT:
        opener = lasttoken_ == TFOR ? "\"for\"" : "\"select\"";
        close = for_clause(opener, start);
        break;
      case TCASE:
        case_clause(start);
        return redirections();
      case TLP:
        if (bash() && arithmetic_command(start)) return redirections();
        list(0);
        close = TRP;
        opener = "\"(\"";
        break;
      case TBEGIN:
        list(0);
        close = TEND;
        opener = "\"{\"";
        break;
      case TDBRACKET:
        conditional(start);
        return redirections();
      case TFUNCTION:
        return function_keyword();
      case TTIME:  // bash: `time` only starts a pipeline; elsewhere it is a command's name
        lasttoken_ = TWORD;
        tokpushback_ = true;
        return simple_command();
      case TWORD:
      case TREDIR:
        tokpushback_ = true;
        return simple_command();
    }
    if (readtoken() != close) unexpected(close, opener, start);
    redirections();
  }

  void redirections() {
    checkkwd_ = kChkKwd;
    while (readtoken() == TREDIR) parse_fname();
    tokpushback_ = true;
  }

  // After `for` (or bash's `select`): the closing token of its body.
  int for_clause(const char* opener, int start) {
    if (readtoken() != TWORD || (!bash() && (quoteflag_ || !is_name(word_)))) {
      if (bash() && lasttoken_ == TLP && peek_char() == '(') return arithmetic_for(opener, start);
      fail("bad for loop variable");
    }
    checkkwd_ = kChkNl | kChkKwd;
    if (readtoken() == TIN) {
      while (readtoken() == TWORD) {
      }
      if (lasttoken_ != TNL && lasttoken_ != TSEMI) unexpected();
    } else if (lasttoken_ != TSEMI) {
      tokpushback_ = true;
    }
    return loop_body(opener, start);
  }

  int loop_body(const char* opener, int start) {
    checkkwd_ = kChkNl | kChkKwd;
    const int t = readtoken();
    if (bash() && t == TBEGIN) {
      list(0);
      return TEND;
    }
    if (t != TDO) unexpected(TDO, opener, start);
    list(0);
    return TDONE;
  }

  void case_clause(int start) {
    if (readtoken() != TWORD) unexpected(TWORD);
    checkkwd_ = kChkNl | kChkKwd;
    if (readtoken() != TIN) unexpected(TIN, "\"case\"", start);
    checkkwd_ = kChkNl | kChkKwd;
    int t = readtoken();
    while (t != TESAC) {
      if (lasttoken_ == TLP) readtoken();
      if (bash()) pattern_word();
      for (;;) {
        if (readtoken() != TPIPE) break;
        readtoken();
        if (bash()) pattern_word();
      }
      if (lasttoken_ != TRP) unexpected(TRP, "\"case\"", start);
      list(2);
      checkkwd_ = kChkNl | kChkKwd;
      if ((t = readtoken()) != TESAC) {
        if (t != TENDCASE) unexpected(TENDCASE, "\"case\"", start);
        checkkwd_ = kChkNl | kChkKwd;
        t = readtoken();
      }
    }
  }
  // bash wants a word for a pattern; dash takes any token there.
  void pattern_word() {
    if (lasttoken_ != TWORD && lasttoken_ < TNOT) unexpected();
  }

  void simple_command() {
    int nargs = 0;
    bool vars = false, redir = false, declaration = false;
    Word first;
    int save = kChkAssign;  // before the command's name: assignments
    for (;;) {
      checkkwd_ = save;
      const int t = readtoken();
      if (t == TWORD) {
        if (save && is_assignment(word_) && (nargs == 0 || declaration)) {
          vars = vars || nargs == 0;
        } else {
          if (++nargs == 1) {
            first = word_;
            declaration = bash() && !quoteflag_ && is_declaration(plain_text(word_));
          }
          save = declaration ? kChkAssign : 0;
        }
        continue;
      }
      if (t == TREDIR) {
        redir = true;
        parse_fname();
        continue;
      }
      if (t == TLP && nargs == 1 && !vars && !redir) {
        if (readtoken() != TRP) unexpected(TRP);
        if (!valid_function_name(first)) fail("bad function name");
        checkkwd_ = kChkNl | kChkKwd;
        if (bash()) compound_body();
        command();
        return;
      }
      tokpushback_ = true;
      return;
    }
  }

  bool is_assignment(const Word& w) const {
    size_t i = 0;
    if (w.empty() || !is_name_start(w[0])) return false;
    while (i < w.size() && is_name_char(w[i])) ++i;
    if (i < w.size() && w[i] == '=') return true;
    if (!bash()) return false;
    if (i < w.size() && w[i] == '[') {  // bash: NAME[subscript]=
      while (i < w.size() && w[i] != ']') ++i;
      ++i;
    }
    if (i < w.size() && w[i] == '+') ++i;
    return i < w.size() && w[i] == '=';
  }
  // bash: the word so far is NAME=, NAME+= or NAME[...]= and a `(` follows: an array.
  bool array_assignment(const Word& w) const { return !w.empty() && w.back() == '=' && is_assignment(w); }
  static bool is_declaration(const std::string& s) {
    for (auto d : kDeclarationBuiltins)
      if (d == s) return true;
    return false;
  }
  bool valid_function_name(const Word& w) const {
    if (bash()) return !w.empty() && !has_marks(w);
    if (!is_name(w)) return false;
    const std::string s = plain_text(w);
    for (auto b : kSpecialBuiltins)
      if (b == s) return false;
    return true;
  }

  // ---- bash ----

  int peek_char() {
    const int c = pgetc();
    pungetc();
    return c;
  }

  // A bash function's body is a compound command.
  void compound_body() {
    const int t = readtoken();
    if (t != TBEGIN && t != TLP && t != TIF && t != TWHILE && t != TUNTIL && t != TFOR && t != TSELECT && t != TCASE &&
        t != TDBRACKET)
      unexpected();
    tokpushback_ = true;
  }

  void function_keyword() {
    if (readtoken() != TWORD) unexpected();
    if (readtoken() == TLP) {
      if (readtoken() != TRP) unexpected(TRP);
    } else {
      tokpushback_ = true;
    }
    checkkwd_ = kChkNl | kChkKwd;
    compound_body();
    command();
  }

  // NAME=( word... ): words, newlines and comments up to the `)`.
  void read_array() {
    const int start = line();
    const int kwd = checkkwd_;
    checkkwd_ = 0;  // its words are no assignments: another array inside is refused
    for (;;) {
      const int t = xxreadtoken();
      if (t == TRP) {
        checkkwd_ = kwd;
        return;
      }
      if (t == TNL) continue;
      if (t == TEOF) unexpected(TRP, "array's \"(\"", start);
      if (t != TWORD) unexpected();
    }
  }

  void ansi_c_string(int start) {
    for (;;) {
      int c = pgetc();
      const bool escaped = c == '\\';
      if (escaped) c = pgetc();
      if (c == kEof) fail("unterminated quoted string: the $' at line " + std::to_string(start) + " is not closed");
      if (c == '\n')
        ++line();
      else if (c == '\'' && !escaped)
        return;
    }
  }

  // Skips to the `close` of a ${...} or "..." the way bash's parse_matched_pair does: quotes,
  // escapes and substitutions inside are stepped over, $(...) is parsed.
  void bash_skip_to(int open, int close, int start) {
    Nest nest(*this);
    int count = 1;
    for (;;) {
      int c = pgetc_eatbnl();
      if (c == kEof) {
        if (close == '"')
          fail("unterminated quoted string: the \" at line " + std::to_string(start) + " is not closed");
        fail("missing '}': the ${ at line " + std::to_string(start) + " is not closed");
      }
      if (c == '\n') {
        ++line();
      } else if (c == '\\') {
        if (pgetc() == '\n') ++line();
      } else if (c == close) {
        if (--count == 0) return;
      } else if (open == '[' && c == open) {  // bash nests brackets in a subscript, not braces in ${...}
        ++count;
      } else if (c == '\'' && close != '"') {
        skip_single_quote();
      } else if (c == '"' && close != '"') {
        bash_skip_to('"', '"', line());
      } else if (c == '`') {
        WordState ws;
        ws.st.emplace_back();
        ws.st.back().dblquote = close == '"';
        backquote(ws);
      } else if (c == '$') {
        WordState ws;
        ws.st.emplace_back();
        ws.st.back().syntax = close == '"' ? Syntax::dq : Syntax::base;
        substitution(ws);
      }
    }
  }
  void skip_single_quote() {
    const int start = line();
    for (;;) {
      const int c = pgetc();
      if (c == kEof) fail("unterminated quoted string: the ' at line " + std::to_string(start) + " is not closed");
      if (c == '\'') return;
      if (c == '\n') ++line();
    }
  }

  // bash: $((...)) is arithmetic when its parentheses close with `))`; otherwise it is $( (...) ).
  void bash_arithmetic(WordState& ws, int start) {
    const Input saved = inputs_.back();
    if (skip_arithmetic(start)) {
      ws.out.push_back(kExpansionMark);
      return;
    }
    inputs_.back() = saved;
    pungetc();
    command_substitution(ws, start);
  }
  // After `((`: true at the matching `))`, false at a `)` that is not followed by another.
  bool skip_arithmetic(int start) {
    int depth = 0;
    for (;;) {
      const int c = pgetc_eatbnl();
      if (c == kEof) fail("missing '))': the (( at line " + std::to_string(start) + " is not closed");
      if (c == '\n') {
        ++line();
      } else if (c == '(') {
        ++depth;
      } else if (c == ')') {
        if (depth > 0) {
          --depth;
          continue;
        }
        return pgetc_eatbnl() == ')';
      } else if (c == '\\') {
        if (pgetc() == '\n') ++line();
      } else if (c == '\'') {
        skip_single_quote();
      } else if (c == '"') {
        bash_skip_to('"', '"', line());
      } else if (c == '`' || (c == '$' && peek_char() == '(')) {  // ${ is no pair in bash's arithmetic
        WordState ws;
        ws.st.emplace_back();
        if (c == '`')
          backquote(ws);
        else
          substitution(ws);
      }
    }
  }
  // ((...)) where a command starts (the `(` just read); false when it is a subshell in a subshell.
  bool arithmetic_command(int start) {
    if (peek_char() != '(') return false;
    const Input saved = inputs_.back();
    pgetc();
    if (skip_arithmetic(start)) return true;
    inputs_.back() = saved;
    return false;
  }
  int arithmetic_for(const char* opener, int start) {
    pgetc();
    if (!skip_arithmetic(start)) fail("bad for loop: for ((...)) is not closed by ))");
    checkkwd_ = kChkNl | kChkKwd;
    if (readtoken() != TSEMI) tokpushback_ = true;
    return loop_body(opener, start);
  }

  // [[ ... ]]: words and the operators && || ! ( ) < > up to ]]. bash checks more (operators and
  // their operands); it reports what it finds wrong but exits 0 from `bash -n` and stops reading
  // the file there, so the checker, which takes every such report as an error, is as strict as
  // the words and operators themselves.
  void conditional(int start) {
    bool operand_next = true;
    int parens = 0;
    for (;;) {
      int c = pgetc_eatbnl();
      while (c == ' ' || c == '\t') c = pgetc_eatbnl();
      if (c == '\n') {
        ++line();
        if (operand_next) continue;
        lasttoken_ = TNL;
        unexpected();
      }
      if (c == kEof) {
        lasttoken_ = TEOF;
        fail("end of file unexpected (expecting \"]]\"): the \"[[\" at line " + std::to_string(start) +
             " is not closed");
      }
      if (c == '&' || c == '|') {
        if (pgetc_eatbnl() != c) {
          lasttoken_ = c == '&' ? TBACKGND : TPIPE;
          unexpected();
        }
        operand_next = true;
      } else if (c == '(' || c == '!') {
        parens += c == '(';
        operand_next = true;
      } else if (c == ')') {
        if (--parens < 0) {
          lasttoken_ = TRP;
          unexpected();
        }
        operand_next = false;
      } else if (c == '<' || c == '>') {
        operand_next = true;
      } else if (c == ';') {
        lasttoken_ = TSEMI;
        unexpected();
      } else {
        read_word(c, /*in_cond=*/true);
        if (!quoteflag_ && !has_marks(word_) && plain_text(word_) == "]]") {
          if (parens > 0) fail("\"]]\" unexpected (expecting \")\")");
          break;
        }
        operand_next = false;
      }
    }
  }

  ShellDialect dialect_;
  int lasttoken_ = TEOF;
  bool tokpushback_ = false;
  int checkkwd_ = 0;
  Word word_;
  bool quoteflag_ = false;
  bool redir_heredoc_ = false, redir_strip_tabs_ = false;  // the redirection just read
  std::vector<Heredoc> heredocs_;                          // their bodies follow the next newline
  int depth_ = 0;
};

bool merge_conflict_marker(std::string_view line) {
  for (std::string_view m : {"<<<<<<<", "=======", ">>>>>>>", "|||||||"})
    if (line.substr(0, m.size()) == m && (line.size() == m.size() || line[m.size()] == ' ')) return true;
  return false;
}

std::string_view line_of(std::string_view text, int n) {
  size_t pos = 0;
  for (int i = 1; i < n; ++i) {
    pos = text.find('\n', pos);
    if (pos == std::string_view::npos) return {};
    ++pos;
  }
  return text.substr(pos, text.find('\n', pos) - pos);
}

}  // namespace

std::optional<ShellSyntaxError> find_shell_syntax_error(std::string_view text, ShellDialect dialect) {
  try {
    Parser(text, dialect).parse_file();
  } catch (const Failure& f) {
    return ShellSyntaxError{f.line, f.message};
  }
  return std::nullopt;
}

Status check_shell_file(std::string_view path, std::string_view text, ShellDialect dialect) {
  auto e = find_shell_syntax_error(text, dialect);
  if (!e) return {};
  std::string msg = std::string(path) + ":" + std::to_string(e->line) + ": not valid shell (" +
                    (dialect == ShellDialect::bash ? "bash -n" : "sh -n") + " refuses it): " + e->message;
  if (merge_conflict_marker(line_of(text, e->line)))
    msg += " (line " + std::to_string(e->line) + " is a merge-conflict marker)";
  return Error{msg + "; nothing was changed"};
}

}  // namespace gpt
