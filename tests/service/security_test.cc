// TLS, mutual TLS and bearer tokens on the gRPC port: BearerAuth's parsing and comparison, the validation of the
// config's security block, and real servers (fixture model, ephemeral ports) called through real channels, by
// the test's own stubs and by clipctl. The certificates are made by the `openssl` command when each test starts,
// in the test's own directory: a CA, a server certificate for localhost and 127.0.0.1 and a client certificate
// signed by it, and an unrelated second CA with a client certificate of its own.
#include "server/service/security.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/commands.h"
#include "clipserve/v1/clipserve.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/common/file_util.h"
#include "server/service/config.h"
#include "server/service/server.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_server.h"

namespace clipserve::service {
namespace {

namespace fs = std::filesystem;
using ::clipserve::testing::FixtureDir;
using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kMissing[] = "missing authorization metadata: send 'authorization: Bearer <token>'";

// ---- BearerAuth -----------------------------------------------------------------------------------------------

std::unique_ptr<BearerAuth> Auth(const std::vector<std::string>& tokens) {
  auto auth = BearerAuth::Create(tokens);
  EXPECT_THAT(auth, IsOk());
  return auth.ok() ? std::move(auth).value() : nullptr;
}

TEST(BearerAuth, AcceptsEveryConfiguredTokenWithTheSchemeInAnyCase) {
  auto auth = Auth({"token-one", "token-two", "t3"});
  ASSERT_NE(auth, nullptr);
  EXPECT_EQ(auth->token_count(), 3);
  for (const char* header : {"Bearer token-one", "bearer token-two", "BEARER t3", "BeArEr token-one"}) {
    EXPECT_THAT(auth->Check(header), IsOk()) << header;
  }
}

TEST(BearerAuth, IgnoresSpacesAroundTheToken) {
  auto auth = Auth({"token-one"});
  ASSERT_NE(auth, nullptr);
  for (const char* header :
       {"Bearer    token-one", "  Bearer token-one  ", "Bearer\ttoken-one", "Bearer token-one\r"}) {
    EXPECT_THAT(auth->Check(header), IsOk()) << "'" << header << "'";
  }
}

TEST(BearerAuth, RefusesMissingEmptyAndOtherSchemes) {
  auto auth = Auth({"token-one"});
  ASSERT_NE(auth, nullptr);
  EXPECT_THAT(auth->Check(""), StatusIs(absl::StatusCode::kUnauthenticated, kMissing));
  EXPECT_THAT(auth->Check("   "), StatusIs(absl::StatusCode::kUnauthenticated, kMissing));
  for (const char* header : {"Bearer", "Bearer   ", "bearer\t"}) {
    EXPECT_THAT(auth->Check(header), StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("empty bearer token")))
        << header;
  }
  // A bare token, or one under another scheme, is refused without echoing any of it.
  for (const char* header : {"token-one", "Basic token-one", "Bearertoken-one", "Token token-one"}) {
    EXPECT_THAT(auth->Check(header),
                StatusIs(absl::StatusCode::kUnauthenticated,
                         AllOf(HasSubstr("does not use the Bearer scheme"), Not(HasSubstr("token-one")))))
        << header;
  }
}

TEST(BearerAuth, RefusesWrongTokensWithoutEchoingThem) {
  auto auth = Auth({"token-one", "token-two"});
  ASSERT_NE(auth, nullptr);
  // Prefixes, extensions, case changes and two tokens at once are all different tokens.
  for (const char* header : {"Bearer token-on", "Bearer token-one1", "Bearer TOKEN-ONE", "Bearer token-one token-two",
                             "Bearer s3cret-guess", "Bearer x"}) {
    absl::Status s = auth->Check(header);
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kUnauthenticated, "invalid bearer token")) << header;
  }
}

TEST(BearerAuth, ReadsTheOneAuthorizationEntryOfTheMetadata) {
  auto auth = Auth({"token-one"});
  ASSERT_NE(auth, nullptr);
  std::multimap<grpc::string_ref, grpc::string_ref> metadata = {{"user-agent", "test"}};
  EXPECT_THAT(auth->Check(metadata), StatusIs(absl::StatusCode::kUnauthenticated, kMissing));
  metadata.emplace("authorization", "Bearer token-one");
  EXPECT_THAT(auth->Check(metadata), IsOk());
  metadata.emplace("authorization", "Bearer token-one");
  EXPECT_THAT(auth->Check(metadata), StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("more than one")));
}

TEST(BearerAuth, CreateRefusesUnusableTokens) {
  EXPECT_THAT(BearerAuth::Create({}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at least one token")));
  for (const std::string& bad : {std::string(""), std::string("two words"), std::string("tab\there"),
                                 std::string("caf\xc3\xa9"), std::string(5000, 'a')}) {
    EXPECT_THAT(BearerAuth::Create({"good-token", bad}),
                StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr("token 2"), Not(HasSubstr("good")))));
  }
}

// ---- certificates ---------------------------------------------------------------------------------------------

// A directory of its own for each test (ctest runs the tests as parallel processes), with the certificates.
class CertificatesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           absl::StrCat("security_test_", ::testing::UnitTest::GetInstance()->current_test_info()->name(), "_",
                        ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "m1");
    std::ofstream(dir_ / "m1" / "config.json") << "{}";
    MakeCertificates();
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  std::string P(const std::string& name) const { return (dir_ / name).string(); }
  std::string Read(const std::string& name) const {
    absl::StatusOr<std::string> text = ReadFileToString(dir_ / name);
    EXPECT_THAT(text, IsOk());
    return text.ok() ? *text : "";
  }
  void Write(const std::string& name, const std::string& text) const { std::ofstream(dir_ / name) << text; }

  // ca.pem/ca.key, server.pem/server.key (CN and SAN localhost, SAN IP 127.0.0.1), client.pem/client.key (from
  // ca), other_ca.pem/other_ca.key, other_client.pem/other_client.key (from other_ca). EC P-256: fast to make.
  void MakeCertificates() {
    Write("openssl.cnf", R"([req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:false
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
[client]
basicConstraints = CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
)");
    const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    auto ca = [&](const std::string& name, const std::string& cn) {
      return absl::StrCat("openssl req -x509 ", key, " -keyout ", name, ".key -out ", name,
                          ".pem -days 2 -subj '/CN=", cn, "' -config openssl.cnf -extensions ca");
    };
    auto leaf = [&](const std::string& name, const std::string& cn, const std::string& ca_name,
                    const std::string& section, int serial) {
      return absl::StrCat("openssl req -new ", key, " -keyout ", name, ".key -out ", name, ".csr -subj '/CN=", cn,
                          "' -config openssl.cnf && openssl x509 -req -in ", name, ".csr -CA ", ca_name, ".pem -CAkey ",
                          ca_name, ".key -set_serial ", serial, " -days 2 -out ", name,
                          ".pem -extfile openssl.cnf -extensions ", section);
    };
    for (const std::string& command :
         {ca("ca", "clipserve test CA"), ca("other_ca", "unrelated test CA"),
          leaf("server", "localhost", "ca", "server", 2), leaf("client", "test client", "ca", "client", 3),
          leaf("other_client", "other client", "other_ca", "client", 4)}) {
      const std::string full = absl::StrCat("cd '", dir_.string(), "' && (", command, ") >>openssl.log 2>&1");
      ASSERT_EQ(std::system(full.c_str()), 0) << command << "\n" << Read("openssl.log");
    }
  }

  absl::StatusOr<ServerConfig> Parse(const std::string& security) {
    return ParseServerConfig(absl::StrCat(R"(models { name: "a" path: "m1" } security { )", security, " }"),
                             "test.textproto", dir_);
  }

  fs::path dir_;
};

// ---- validation of the security block -------------------------------------------------------------------------

using SecurityConfigTest = CertificatesTest;

TEST_F(SecurityConfigTest, ResolvesRelativePathsAndDefaultsRequireToken) {
  Write("tokens", "token-one\n");
  auto c = Parse(R"(tls_cert_file: "server.pem" tls_key_file: "server.key" tls_client_ca_file: "ca.pem"
                    tokens_file: "tokens")");
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->security().tls_cert_file(), P("server.pem"));
  EXPECT_EQ(c->security().tls_key_file(), P("server.key"));
  EXPECT_EQ(c->security().tls_client_ca_file(), P("ca.pem"));
  EXPECT_EQ(c->security().tokens_file(), P("tokens"));
  EXPECT_TRUE(c->security().require_token());
  // Finalizing again (as main does after flags) changes nothing.
  ServerConfig again = *c;
  ASSERT_THAT(FinalizeServerConfig(&again, "/elsewhere"), IsOk());
  EXPECT_EQ(again.security().tls_cert_file(), P("server.pem"));

  auto plain = ParseServerConfig(R"(models { name: "a" path: "m1" })", "test.textproto", dir_);
  ASSERT_THAT(plain, IsOk());
  EXPECT_FALSE(plain->has_security());
}

TEST_F(SecurityConfigTest, RefusesAKeyWithoutACertificate) {
  EXPECT_THAT(Parse(R"(tls_key_file: "server.key")"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("security.tls_key_file"), HasSubstr("without tls_cert_file"))));
  EXPECT_THAT(Parse(R"(tls_cert_file: "server.pem")"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("security.tls_cert_file"), HasSubstr("without tls_key_file"))));
  EXPECT_THAT(Parse(R"(tls_client_ca_file: "ca.pem")"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("security.tls_client_ca_file"), HasSubstr("needs TLS"))));
}

TEST_F(SecurityConfigTest, RefusesMissingAndMalformedFilesNamingTheField) {
  EXPECT_THAT(Parse(R"(tls_cert_file: "missing.pem" tls_key_file: "server.key")"),
              StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr("security.tls_cert_file"),
                                                                 HasSubstr("missing.pem"), HasSubstr("no such file"))));
  EXPECT_THAT(Parse(R"(tls_cert_file: "server.pem" tls_key_file: "missing.key")"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("security.tls_key_file"), HasSubstr("no such file"))));
  EXPECT_THAT(Parse(R"(tls_cert_file: "server.pem" tls_key_file: "server.key" tls_client_ca_file: "missing.pem")"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("security.tls_client_ca_file")));
  Write("junk.pem", "not a certificate\n");
  EXPECT_THAT(Parse(R"(tls_cert_file: "junk.pem" tls_key_file: "server.key")"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("security.tls_cert_file"), HasSubstr("no PEM certificate"))));
  EXPECT_THAT(Parse(R"(tls_cert_file: "server.pem" tls_key_file: "junk.pem")"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("security.tls_key_file"), HasSubstr("not an unencrypted PEM private key"))));
  // The client's key is a fine key, but not the server certificate's.
  EXPECT_THAT(Parse(R"(tls_cert_file: "server.pem" tls_key_file: "client.key")"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("security.tls_key_file"), HasSubstr("does not belong"))));
}

TEST_F(SecurityConfigTest, ChecksTokenSources) {
  EXPECT_THAT(Parse("require_token: true"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("security.require_token"), HasSubstr("no tokens are configured"))));
  EXPECT_THAT(
      Parse(R"(tokens_file: "missing")"),
      StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr("security.tokens_file"), HasSubstr("missing"))));
  Write("empty", "# only a comment\n\n");
  EXPECT_THAT(Parse(R"(tokens_file: "empty")"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no token in the file")));
  Write("bad", "good-token\nsecret with spaces\n");
  EXPECT_THAT(Parse(R"(tokens_file: "bad")"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("security.tokens_file"), HasSubstr("line 2"), Not(HasSubstr("secret")))));
  const std::string unset = absl::StrCat("CLIPSERVE_TEST_UNSET_", ::getpid());
  ::unsetenv(unset.c_str());
  EXPECT_THAT(Parse(absl::StrCat(R"(tokens_env: ")", unset, R"(")")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("security.tokens_env"), HasSubstr(unset), HasSubstr("not set"))));
}

TEST_F(SecurityConfigTest, TokensComeFromTheFileAndTheEnvironment) {
  Write("tokens", "# clients of team A\r\n  file-token-1  \r\n\r\nfile-token-2\n#file-token-3\n");
  const std::string env = absl::StrCat("CLIPSERVE_TEST_TOKENS_", ::getpid());
  ::setenv(env.c_str(), " env-token-1 ,,env-token-2", 1);
  SecurityConfig config;
  config.set_tokens_file(P("tokens"));
  config.set_tokens_env(env);
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(ServerSecurity security, LoadServerSecurity(config));
  ::unsetenv(env.c_str());
  ASSERT_NE(security.auth, nullptr);
  EXPECT_EQ(security.auth->token_count(), 4);
  for (const char* token : {"file-token-1", "file-token-2", "env-token-1", "env-token-2"}) {
    EXPECT_THAT(security.auth->Check(absl::StrCat("Bearer ", token)), IsOk()) << token;
  }
  EXPECT_THAT(security.auth->Check("Bearer #file-token-3"), StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_));
  EXPECT_FALSE(security.tls);
  EXPECT_THAT(security.summary, AllOf(HasSubstr("plaintext"), HasSubstr("4 token(s)"), Not(HasSubstr("token-1"))));

  // require_token: false reads the tokens but checks nothing.
  config.set_tokens_env("");
  config.set_require_token(false);
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(ServerSecurity off, LoadServerSecurity(config));
  EXPECT_EQ(off.auth, nullptr);
}

// ---- real servers ---------------------------------------------------------------------------------------------

// A server on 127.0.0.1 with the fixture model and `security`, and channels to it.
class SecureServerTest : public CertificatesTest {
 protected:
  void SetUp() override {
    CLIPSERVE_REQUIRE_FIXTURES();
    CertificatesTest::SetUp();
  }
  void TearDown() override {
    server_.reset();
    CertificatesTest::TearDown();
  }

  void StartServer(const std::string& security) {
    server_.reset(::clipserve::testing::StartTestServer(
        ParseServerConfig(absl::StrCat(R"(listen_address: "127.0.0.1" grpc_port: 0 http_port: 0
                        models { name: "fixture" path: ")",
                                       (FixtureDir() / "clip").string(), R"(" }
                        security { )",
                                       security, " }"),
                          "test", dir_)));
    ASSERT_NE(server_, nullptr);
  }
  std::string Target() const { return absl::StrCat("127.0.0.1:", server_->grpc_port()); }

  // A channel of its own (no connection shared with the test's other channels).
  std::shared_ptr<grpc::Channel> Channel(const std::shared_ptr<grpc::ChannelCredentials>& credentials) const {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel(Target(), credentials, args);
  }
  std::shared_ptr<grpc::Channel> TlsChannel(const std::string& ca, const std::string& cert = "",
                                            const std::string& key = "") const {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = Read(ca);
    if (!cert.empty()) {
      o.pem_cert_chain = Read(cert);
      o.pem_private_key = Read(key);
    }
    return Channel(grpc::SslCredentials(o));
  }

  // ListModels on `channel` with `token` (none when empty).
  grpc::Status ListModels(const std::shared_ptr<grpc::Channel>& channel, const std::string& token = "") const {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    if (!token.empty()) ctx.AddMetadata("authorization", absl::StrCat("Bearer ", token));
    v1::ListModelsResponse response;
    return v1::Clip::NewStub(channel)->ListModels(&ctx, v1::ListModelsRequest(), &response);
  }

  struct Outcome {
    int rc = -1;
    std::string out, err;
  };
  Outcome Clipctl(const std::vector<std::string>& args) const {
    std::ostringstream out, err;
    Outcome r;
    r.rc = client::RunClipctl(args, client::RemoteVerbs(), out, err);
    r.out = out.str();
    r.err = err.str();
    return r;
  }

  // An HTTP(S) request to the server's HTTP port with the curl CLI (which shares no TLS code with the server):
  // `args` are extra curl options. Returns the HTTP status, 0 when curl failed (connection, handshake,
  // certificate), with the body in *body.
  int Curl(const std::string& scheme, const std::string& path, const std::string& args, std::string* body = nullptr) {
    const std::string command =
        absl::StrCat("cd '", dir_.string(), "' && curl -sS --max-time 20 -o curl_body -w '%{http_code}' ", args, " '",
                     scheme, "://localhost:", server_->http_port(), path, "' >curl_code 2>curl_err");
    const int rc = std::system(command.c_str());
    if (body != nullptr) *body = Read("curl_body");
    if (rc != 0) return 0;
    return std::atoi(Read("curl_code").c_str());
  }

  std::unique_ptr<Server> server_;
};

std::string Describe(const grpc::Status& s) { return absl::StrCat(s.error_code(), ": ", s.error_message()); }

TEST_F(SecureServerTest, TlsClientTrustingTheCaIsServed) {
  StartServer(R"(tls_cert_file: "server.pem" tls_key_file: "server.key")");
  auto channel = TlsChannel("ca.pem");
  grpc::Status s = ListModels(channel);
  EXPECT_TRUE(s.ok()) << Describe(s);
  grpc::ClientContext ctx;
  v1::TokenizeRequest req;
  req.add_texts("a photo of a cat");
  v1::TokenizeResponse resp;
  s = v1::Clip::NewStub(channel)->Tokenize(&ctx, req, &resp);
  ASSERT_TRUE(s.ok()) << Describe(s);
  EXPECT_EQ(resp.results_size(), 1);
}

TEST_F(SecureServerTest, TlsClientTrustingAnotherCaFails) {
  StartServer(R"(tls_cert_file: "server.pem" tls_key_file: "server.key")");
  grpc::Status s = ListModels(TlsChannel("other_ca.pem"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << Describe(s);
  // Nor does a plaintext client get through.
  s = ListModels(Channel(grpc::InsecureChannelCredentials()));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << Describe(s);
}

TEST_F(SecureServerTest, MutualTlsNeedsAClientCertificateFromItsCa) {
  StartServer(R"(tls_cert_file: "server.pem" tls_key_file: "server.key" tls_client_ca_file: "ca.pem")");
  grpc::Status s = ListModels(TlsChannel("ca.pem"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << "no client certificate: " << Describe(s);
  s = ListModels(TlsChannel("ca.pem", "other_client.pem", "other_client.key"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << "certificate from another CA: " << Describe(s);
  s = ListModels(TlsChannel("ca.pem", "client.pem", "client.key"));
  EXPECT_TRUE(s.ok()) << "certificate from the client CA: " << Describe(s);
}

TEST_F(SecureServerTest, TokensAreRequiredOnClipAndGenerationButNotOnHealth) {
  Write("tokens", "# test clients\nright-token\n");
  StartServer(R"(tls_cert_file: "server.pem" tls_key_file: "server.key" tokens_file: "tokens")");
  auto channel = TlsChannel("ca.pem");
  grpc::Status s = ListModels(channel);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << Describe(s);
  EXPECT_EQ(s.error_message(), kMissing);
  s = ListModels(channel, "wrong-token");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << Describe(s);
  EXPECT_EQ(s.error_message(), "invalid bearer token");
  s = ListModels(channel, "right-token");
  EXPECT_TRUE(s.ok()) << Describe(s);

  {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckResponse resp;
    s = grpc::health::v1::Health::NewStub(channel)->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &resp);
    ASSERT_TRUE(s.ok()) << Describe(s);
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
  // Generation too: refused for the token before it is told that this server has no generation model.
  for (const std::string token : {"", "right-token"}) {
    grpc::ClientContext ctx;
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    v1::ListGenerationsResponse resp;
    s = v1::Generation::NewStub(channel)->ListGenerations(&ctx, v1::ListGenerationsRequest(), &resp);
    EXPECT_EQ(s.error_code(), token.empty() ? grpc::StatusCode::UNAUTHENTICATED : grpc::StatusCode::FAILED_PRECONDITION)
        << Describe(s);
  }
  {
    grpc::ClientContext ctx;
    v1::GenerateRequest req;
    req.set_prompt("a red circle");
    auto reader = v1::Generation::NewStub(channel)->Generate(&ctx, req);
    v1::GenerateResponse resp;
    EXPECT_FALSE(reader->Read(&resp));
    s = reader->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << Describe(s);
  }
  // The refusals are counted like any other answer.
  EXPECT_THAT(server_->CollectMetrics(),
              HasSubstr(R"(clipserve_requests_total{model="-",method="ListModels",code="UNAUTHENTICATED"} 2)"));
}

TEST_F(SecureServerTest, TokensWorkOverPlaintextToo) {
  const std::string env = absl::StrCat("CLIPSERVE_TEST_TOKENS_", ::getpid());
  ::setenv(env.c_str(), "token-a,token-b", 1);
  StartServer(absl::StrCat(R"(tokens_env: ")", env, R"(")"));
  ::unsetenv(env.c_str());
  auto channel = Channel(grpc::InsecureChannelCredentials());
  EXPECT_EQ(ListModels(channel).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(ListModels(channel, "token-b").ok());

  // clipctl's token reaches the server on a plaintext channel as well.
  Outcome r = Clipctl({"--target=" + Target(), "--token=token-a", "models", "--json"});
  EXPECT_EQ(r.rc, 0) << r.err;
}

TEST_F(SecureServerTest, TheHttpPortServesTlsWithTheSameCertificate) {
  StartServer(R"(tls_cert_file: "server.pem" tls_key_file: "server.key")");
  std::string body;
  EXPECT_EQ(Curl("https", "/v1/models", "--cacert ca.pem", &body), 200) << Read("curl_err");
  EXPECT_THAT(body, HasSubstr("\"fixture\""));
  EXPECT_EQ(Curl("https", "/healthz", "--cacert ca.pem"), 200) << Read("curl_err");
  EXPECT_EQ(Curl("https", "/v1/models", "--cacert other_ca.pem"), 0);  // a client trusting another CA
  EXPECT_THAT(Read("curl_err"), HasSubstr("certificate"));
  EXPECT_EQ(Curl("http", "/v1/models", ""), 0) << "plaintext on the TLS port";
}

TEST_F(SecureServerTest, MutualTlsCoversTheHttpPortUnlessHttpTlsIsOff) {
  StartServer(R"(tls_cert_file: "server.pem" tls_key_file: "server.key" tls_client_ca_file: "ca.pem")");
  EXPECT_EQ(Curl("https", "/v1/models", "--cacert ca.pem"), 0) << "no client certificate";
  EXPECT_EQ(Curl("https", "/v1/models", "--cacert ca.pem --cert other_client.pem --key other_client.key"), 0)
      << "a client certificate from another CA";
  EXPECT_EQ(Curl("https", "/v1/models", "--cacert ca.pem --cert client.pem --key client.key"), 200)
      << Read("curl_err");
  server_.reset();
  StartServer(R"(tls_cert_file: "server.pem" tls_key_file: "server.key" tls_client_ca_file: "ca.pem"
                 http_tls: false)");
  EXPECT_EQ(Curl("http", "/metrics", ""), 200) << Read("curl_err");
}

TEST_F(SecureServerTest, TheJsonGatewayNeedsTheTokensAndProbesDoNot) {
  Write("tokens", "gateway-token\n");
  StartServer(R"(tls_cert_file: "server.pem" tls_key_file: "server.key" tokens_file: "tokens")");
  std::string body;
  EXPECT_EQ(Curl("https", "/v1/models", "--cacert ca.pem", &body), 401);
  EXPECT_THAT(body, HasSubstr("\"status\":\"UNAUTHENTICATED\""));
  EXPECT_THAT(body, HasSubstr("missing authorization metadata"));
  EXPECT_EQ(Curl("https", "/v1/models", "--cacert ca.pem -H 'Authorization: Bearer wrong'", &body), 401);
  EXPECT_THAT(body, HasSubstr("invalid bearer token"));
  EXPECT_THAT(body, Not(HasSubstr("wrong")));
  EXPECT_EQ(Curl("https", "/v1/models", "--cacert ca.pem -H 'Authorization: Bearer gateway-token'", &body), 200);
  EXPECT_EQ(Curl("https", "/v1/generate", "--cacert ca.pem -d '{\"prompt\": \"x\"}'", &body), 401);
  for (const char* open : {"/healthz", "/readyz", "/metrics"}) {
    EXPECT_EQ(Curl("https", open, "--cacert ca.pem"), 200) << open;
  }
}

TEST_F(SecurityConfigTest, HttpTlsFollowsTlsAndNeedsACertificate) {
  auto c = Parse(R"(tls_cert_file: "server.pem" tls_key_file: "server.key")");
  ASSERT_THAT(c, IsOk());
  EXPECT_TRUE(c->security().http_tls());
  c = Parse(R"(tokens_env: "HOME")");
  ASSERT_THAT(c, IsOk());
  EXPECT_FALSE(c->security().http_tls());
  EXPECT_THAT(Parse("http_tls: true"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("security.http_tls: needs security.tls_cert_file")));
}

TEST_F(SecureServerTest, ClipctlConnectsWithTlsClientCertificateAndToken) {
  Write("tokens", "right-token\n");
  StartServer(R"(tls_cert_file: "server.pem" tls_key_file: "server.key" tls_client_ca_file: "ca.pem"
                 tokens_file: "tokens")");
  // By IP, with the certificate's name given; every verb's client (Clip and Generation) gets TLS and the token.
  const std::vector<std::string> tls = {"--target=" + Target(), "--tls_ca=" + P("ca.pem"),
                                        "--tls_server_name=localhost", "--tls_cert=" + P("client.pem"),
                                        "--tls_key=" + P("client.key")};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = tls;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  Outcome r = Clipctl(with({"--token=right-token", "models", "--json"}));
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("fixture"));
  r = Clipctl(with({"--token=right-token", "generations"}));
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.err, HasSubstr("FAILED_PRECONDITION"));

  ::setenv("CLIPSERVE_TOKEN", "right-token", 1);
  r = Clipctl(with({"models"}));
  EXPECT_EQ(r.rc, 0) << r.err;
  r = Clipctl(with({"--token=wrong-token", "models"}));  // the flag wins over the variable
  ::unsetenv("CLIPSERVE_TOKEN");
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.err, AllOf(HasSubstr("UNAUTHENTICATED: invalid bearer token"), HasSubstr("CLIPSERVE_TOKEN"),
                           Not(HasSubstr("wrong-token"))));

  r = Clipctl(with({"models"}));
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAUTHENTICATED: missing authorization metadata"));

  // The wrong CA: the handshake fails, and clipctl says so.
  r = Clipctl({"--target=" + Target(), "--tls_ca=" + P("other_ca.pem"), "--tls_server_name=localhost",
               "--tls_cert=" + P("client.pem"), "--tls_key=" + P("client.key"), "--token=right-token", "models"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.err, HasSubstr("TLS handshake failed"));

  r = Clipctl({"--target=" + Target(), "--tls_cert=" + P("client.pem"), "models"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_THAT(r.err, HasSubstr("--tls_cert and --tls_key go together"));
  r = Clipctl({"--target=" + Target(), "--tls_ca=" + P("missing.pem"), "models"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.err, AllOf(HasSubstr("TLS CA file"), HasSubstr("missing.pem")));
}

}  // namespace
}  // namespace clipserve::service
