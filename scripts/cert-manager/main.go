// A cert-manager controller for the DistCache e2e tier, built from the cert-manager module on
// the Go module proxy (scripts/cert-manager.sh). Upstream's own main package lives in a
// separate module (cmd/controller, module path .../controller-binary) that the proxy does not
// serve, so this file wires the same library code: cert-manager's ContextFactory and its
// registered controllers, the Certificate machinery and the CA and SelfSigned issuers only
// (no ACME, Vault, Venafi, ingress or gateway shims), no leader election, no webhook, no
// metrics server.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/util/sets"

	configscheme "github.com/cert-manager/cert-manager/internal/apis/config/controller/scheme"
	configv1alpha1 "github.com/cert-manager/cert-manager/pkg/apis/config/controller/v1alpha1"
	config "github.com/cert-manager/cert-manager/internal/apis/config/controller"
	"github.com/cert-manager/cert-manager/pkg/controller"
	logf "github.com/cert-manager/cert-manager/pkg/logs"

	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

var enabled = []string{
	"issuers", "clusterissuers",
	"certificates-trigger", "certificates-issuing", "certificates-key-manager",
	"certificates-request-manager", "certificates-readiness", "certificates-revision-manager",
	"certificaterequests-approver", "certificaterequests-issuer-ca",
	"certificaterequests-issuer-selfsigned",
}

func main() {
	clusterNS := flag.String("cluster-resource-namespace", "cert-manager",
		"namespace of the Secrets that ClusterIssuers reference")
	kubeconfig := flag.String("kubeconfig", "", "out of cluster: a kubeconfig")
	flag.Parse()
	logf.InitLogs()
	defer logf.FlushLogs()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = logf.NewContext(ctx, logf.Log, "controller")
	if err := run(ctx, *clusterNS, *kubeconfig); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, clusterNS, kubeconfig string) error {
	log := logf.FromContext(ctx)
	scheme, _, err := configscheme.NewSchemeAndCodecs()
	if err != nil {
		return err
	}
	versioned := &configv1alpha1.ControllerConfiguration{}
	scheme.Default(versioned)
	opts := &config.ControllerConfiguration{}
	if err := scheme.Convert(versioned, opts, nil); err != nil {
		return err
	}
	factory, err := controller.NewContextFactory(ctx, controller.ContextOptions{
		Kubeconfig:         kubeconfig,
		KubernetesAPIQPS:   opts.KubernetesAPIQPS,
		KubernetesAPIBurst: opts.KubernetesAPIBurst,
		IssuerOptions: controller.IssuerOptions{
			ClusterResourceNamespace: clusterNS,
		},
		CertificateOptions: controller.CertificateOptions{
			CopiedAnnotationPrefixes: opts.CopiedAnnotationPrefixes,
		},
	})
	if err != nil {
		return err
	}
	cctx, err := factory.Build()
	if err != nil {
		return err
	}
	want := sets.New(enabled...)
	g, gctx := errgroup.WithContext(ctx)
	var started []string
	for name, fn := range controller.Known() {
		if !want.Has(name) {
			continue
		}
		iface, err := fn(factory)
		if err != nil {
			return fmt.Errorf("controller %s: %w", name, err)
		}
		started = append(started, name)
		g.Go(func() error { return iface.Run(opts.NumberOfConcurrentWorkers, gctx) })
	}
	if len(started) != len(enabled) {
		return fmt.Errorf("only %d of %d controllers registered: %s", len(started),
			len(enabled), strings.Join(started, ","))
	}
	log.Info("starting cert-manager controllers", "controllers", strings.Join(started, ","))
	cctx.SharedInformerFactory.Start(gctx.Done())
	cctx.KubeSharedInformerFactory.Start(gctx.Done())
	cctx.HTTP01ResourceMetadataInformersFactory.Start(gctx.Done())
	return g.Wait()
}
